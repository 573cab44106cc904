"""Stage 3, generate: a response for every test record.

Either the fine-tuned model (or any base model, to score it before fine-tuning) answers each
test prompt, or responses made elsewhere are imported with `generate --from FILE`. Both write
results/<run>/generate/responses.jsonl: the test records in test order, each with `response`,
`prompt_tokens`, `response_tokens`, `stop_reason` ("eos", "length", "imported" or "missing")
and `seconds`.

Generation is resumable: each finished record is appended to responses.partial.jsonl, tagged
with the hash of everything that decides its text, and a rerun only generates what is missing.

An import is remembered by the run: generate/import.json records where the responses came from
(and how), and generate/imported-responses.<ext> keeps a copy of the file. Every later command
on the run whose configuration names no import (the make targets, `judge`, `status`, ...) uses
that import again, from the original file while it exists (so an edit to it reruns the stages
after) and from the copy once it is gone. Generating with a model, or `clean generate`, forgets
it. The file's content is an input of the stage and its path is not in the config key: the same
responses at another path rerun nothing.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from evalpipe.config import RunConfig, parse_override
from evalpipe.errors import EvalpipeError
from evalpipe.io import (
    DataError,
    JsonlAppender,
    atomic_path,
    read_json_object,
    read_jsonl,
    read_partial_jsonl,
    read_records,
    sha256_json,
    write_json,
    write_jsonl,
)
from evalpipe.paths import RunPaths
from evalpipe.records import FIELDS, check_fields, content_id

RESPONSES = "responses.jsonl"
PARTIAL = "responses.partial.jsonl"
IMPORT_REPORT = "import-report.json"
IMPORT_RECORD = "import.json"  # the run's remembered import (module doc)
IMPORT_SETTINGS = ("from_file", "response_key", "allow_partial")
KEPT_COPY = "imported-responses"  # + the imported file's suffix


# -- the stage contract (evalpipe/stages/contract.py) -------------------------------------------

def needs(config: RunConfig) -> tuple[str, ...]:
    # Importing responses, or generating straight from a base model, needs no fine-tune.
    if config.generate.from_file or config.generate.model != "finetuned":
        return ("prepare",)
    return ("prepare", "finetune")


def config_key(config: RunConfig) -> dict:
    generate = config.section("generate")
    if config.generate.from_file:
        # Not the path: the file's content is hashed as an input.
        return {key: generate[key] for key in ("response_key", "allow_partial")}
    unused = {*IMPORT_SETTINGS, "device"}
    if config.generate.dtype == "float32":
        unused.add("dtype")  # what every run did before the setting existed: their key holds
    if config.generate.temperature == 0:
        # Greedy decoding draws nothing at random and, in fp32, batching does not change a
        # response (tests/gpt2/test_generation.py checks the batched path against the
        # one-prompt loop); bf16's rounding may differ with the batch a prompt shares.
        unused |= {"seed", "top_k"} | ({"batch_size"} if config.generate.dtype == "float32"
                                        else set())
    generate = {k: v for k, v in generate.items() if k not in unused}
    key = {"generate": generate, "data.template": config.data.template}
    if config.generate.model != "finetuned":
        from evalpipe.gpt2.runtime import base_identity

        model = config.section("model")
        key["model"] = {k: v for k, v in model.items()
                        if k not in ("bases", "device", "revision")}
        spec = config.model.base if config.generate.model == "base" else config.generate.model
        key.update(base_identity(config, spec))
    return key


def inputs(config: RunConfig, paths: RunPaths) -> dict[str, Path]:
    files = {"prepare/test.jsonl": paths / "prepare/test.jsonl"}
    if config.generate.from_file:
        files["from"] = import_source(config, paths)
    elif config.generate.model == "finetuned":
        for name in ("model.safetensors", "model.json"):
            files[f"finetune/{name}"] = paths / f"finetune/{name}"
    else:  # a base model straight away: its local files, if it has any
        from evalpipe.gpt2.weights import local_files

        spec = config.model.base if config.generate.model == "base" else config.generate.model
        for path in local_files(spec):
            files[f"model/{path.name}"] = path
    return files


def outputs(config: RunConfig) -> tuple[str, ...]:
    if config.generate.from_file:
        return (RESPONSES, IMPORT_REPORT, IMPORT_RECORD, kept_copy_name(config.generate.from_file))
    return (RESPONSES,)


def run(config: RunConfig, paths: RunPaths) -> None:
    test_records = read_jsonl(paths / "prepare/test.jsonl")
    if config.generate.from_file:
        import_responses(config, paths, test_records)
    else:
        forget_import(paths)
        generate_responses(config, paths, test_records)


# -- the remembered import ----------------------------------------------------------------------

def kept_copy_name(from_file: str) -> str:
    return KEPT_COPY + Path(from_file).suffix


def remember_import(config: RunConfig, paths: RunPaths, overrides: list[str]) -> str | None:
    """Apply the run's remembered import to `config`, unless the configuration names an import
    itself or `generate.from_file` is given on the command line; the other import settings
    given there (generate's keys named by the `overrides`: --set, --response-key,
    --allow-partial) win over the remembered ones. Returns the line that tells the user, or
    None when nothing was applied."""
    given = {key for section, key, _ in map(parse_override, overrides) if section == "generate"}
    record_path = paths.stage_dir("generate") / IMPORT_RECORD
    if config.generate.from_file or "from_file" in given or not record_path.exists():
        return None
    record = read_json_object(record_path)
    if not all(key in record for key in IMPORT_SETTINGS):
        raise DataError(f"{record_path}: expected the keys {', '.join(IMPORT_SETTINGS)}; "
                        "'evalpipe clean generate' forgets the import")
    config.generate.from_file = record["from_file"]
    for key in ("response_key", "allow_partial"):
        if key not in given:
            setattr(config.generate, key, record[key])
    where = record["from_file"]
    source = import_source(config, paths)
    if source != Path(where):
        where += f", which is gone: the copy kept in {source}"
    return (f"generate: using the responses imported from {where} (remembered in {record_path}; "
            f"'evalpipe clean generate' forgets them)")


def import_source(config: RunConfig, paths: RunPaths) -> Path:
    """The file to import: generate.from_file, or, once that file is gone, the copy the run
    kept of it when it was imported (never a copy of another file)."""
    source = Path(config.generate.from_file).expanduser()
    out = paths.stage_dir("generate")
    kept = out / kept_copy_name(config.generate.from_file)
    if source.exists() or not kept.exists() or not (out / IMPORT_RECORD).exists():
        return source
    remembered = read_json_object(out / IMPORT_RECORD).get("from_file")
    return kept if remembered == str(source.absolute()) else source


def forget_import(paths: RunPaths) -> None:
    """The run now generates its responses: no import is remembered any more."""
    out = paths.stage_dir("generate")
    for path in (out / IMPORT_RECORD, out / IMPORT_REPORT, *out.glob(f"{KEPT_COPY}*")):
        path.unlink(missing_ok=True)


# -- importing ----------------------------------------------------------------------------------

def import_responses(config: RunConfig, paths: RunPaths, test_records: list[dict]) -> None:
    """Match the file's records to the test split by content (instruction, input, output);
    every test record appears once in the output, in test order."""
    source = import_source(config, paths)
    key = config.generate.response_key
    out = paths.stage_dir("generate")
    kept = out / kept_copy_name(config.generate.from_file)
    importing_the_copy = source == kept
    if not importing_the_copy:
        # Remembered before it is read: an import that fails is tried again by later
        # commands on the run (and fails the same way) rather than forgotten.
        for old_copy in out.glob(f"{KEPT_COPY}*"):
            old_copy.unlink()
        write_json(out / IMPORT_RECORD, {"from_file": str(source.absolute()),
                                         "response_key": key,
                                         "allow_partial": config.generate.allow_partial})
    imported = read_records(source)
    by_content: dict[str, dict] = {}
    unmatched_source: list[int] = []
    test_ids = {content_id(record) for record in test_records}
    for index, record in enumerate(imported):
        check_fields(record, index, source, (*FIELDS, key))
        content = content_id(record)
        if content not in test_ids or content in by_content:
            unmatched_source.append(index)
        else:
            by_content[content] = record

    from evalpipe.templates import encode  # as generation counts tokens

    results, missing = [], []
    for record in test_records:
        match = by_content.get(content_id(record))
        if match is None:
            missing.append(record["id"])
            results.append({**record, "response": None, "prompt_tokens": None,
                            "response_tokens": None, "stop_reason": "missing", "seconds": None})
            continue
        response = match[key]
        results.append({**record, "response": response, "prompt_tokens": None,
                        "response_tokens": len(encode(response)),
                        "stop_reason": "imported", "seconds": None})

    report = {"source": str(source), "response_key": key, "matched": len(test_records) - len(missing),
              "test_records_without_response": missing,
              "source_records_matching_no_test_record": unmatched_source}
    if (missing or unmatched_source) and not config.generate.allow_partial:
        write_json(out / IMPORT_REPORT, report)
        parts = []
        if missing:
            parts.append(f"{len(missing)} test records have no response in it (first: id {missing[0]})")
        if unmatched_source:
            parts.append(f"{len(unmatched_source)} of its records match no test record "
                         f"(first: record {unmatched_source[0]})")
        raise EvalpipeError(
            f"generate --from {source}: {'; '.join(parts)}; all are listed in "
            f"{out / IMPORT_REPORT}; pass --allow-partial to accept"
        )
    if not importing_the_copy:
        with atomic_path(kept) as temporary:
            shutil.copyfile(source, temporary)
    write_jsonl(out / RESPONSES, results)
    write_json(out / IMPORT_REPORT, report)
    print(f"generate: imported {report['matched']} of {len(test_records)} responses from {source}"
          + (f"; {len(missing)} missing" if missing else ""))


# -- generating ---------------------------------------------------------------------------------

def generate_responses(config: RunConfig, paths: RunPaths, test_records: list[dict]) -> None:
    import torch
    from tqdm import tqdm

    from evalpipe.gpt2.generation import generate_batch, length_batches
    from evalpipe.gpt2.runtime import (
        generation_batch_size,
        load_model_for_generation,
        resolve_device,
    )
    from evalpipe.templates import END_OF_TEXT_ID, decode, encode, get_template

    settings = config.generate
    template = get_template(config.data.template)
    out = paths.stage_dir("generate")
    loaded = load_model_for_generation(config, paths)
    device = resolve_device(settings.device)
    dtype = getattr(torch, settings.dtype)  # "float32" or "bfloat16"
    model = loaded.model.to(device=device, dtype=dtype).eval()

    # Records from an interrupted run count only if they were made with the same model and
    # the same settings.
    run_key = sha256_json({"config": config_key(config), "weights": loaded.sha256})
    done = {r["id"]: r for r in read_partial_jsonl(out / PARTIAL) if r.get("_run_key") == run_key}
    todo = [(r, encode(template.prompt(r))) for r in test_records if r["id"] not in done]
    if done:
        print(f"generate: resuming, {len(done)} of {len(test_records)} already done")
    lengths = [len(prompt) for _, prompt in todo]
    longest = min(max(lengths, default=0) + settings.max_new_tokens, model.cfg.context_length)
    batch_size = generation_batch_size(settings.batch_size, device, model.cfg, longest, dtype)
    if settings.batch_size == "auto":
        print(f"generate: batch size {batch_size} (auto, {device.type})")

    generator = torch.Generator(device="cpu").manual_seed(settings.seed)
    progress = tqdm(total=len(test_records), initial=len(done), desc="generate", unit="resp")
    tokens_made, clock = 0, time.monotonic()
    with JsonlAppender(out / PARTIAL) as partial:
        # Similar lengths side by side: a batch wastes less on padding.
        for indices in length_batches(lengths, batch_size):
            batch = [todo[index][0] for index in indices]
            prompts = [todo[index][1] for index in indices]
            batch_clock = time.monotonic()
            generations = generate_batch(
                model, prompts,
                max_new_tokens=settings.max_new_tokens,
                eos_id=END_OF_TEXT_ID,
                temperature=settings.temperature,
                top_k=settings.top_k or None,
                generator=generator,
            )
            seconds = (time.monotonic() - batch_clock) / len(batch)
            for record, prompt, generation in zip(batch, prompts, generations):
                result = {
                    **record,
                    "response": template.extract_response(decode(generation.tokens)),
                    "prompt_tokens": len(prompt),
                    "response_tokens": len(generation.tokens),
                    "stop_reason": generation.stop_reason,
                    "seconds": round(seconds, 4),
                }
                partial.write({**result, "_run_key": run_key})
                done[record["id"]] = result
                tokens_made += len(generation.tokens)
            progress.update(len(batch))
            progress.set_postfix(tok_per_s=f"{tokens_made / (time.monotonic() - clock):.1f}")
    progress.close()

    final = []
    for record in test_records:
        result = dict(done[record["id"]])
        result.pop("_run_key", None)
        final.append(result)
    write_jsonl(out / RESPONSES, final)
    (out / PARTIAL).unlink()
    print(f"generate: {len(final)} responses")
