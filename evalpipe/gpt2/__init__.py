"""The GPT-2 model: the book's GPTModel (model), loading weights from the Hub, files and
checkpoints (weights), batched KV-cache decoding (generation), and choosing the device and
building the model a run asks for (runtime). Imports only torch and the foundation."""
