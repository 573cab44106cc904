"""What people look at: PNG plots (plots), numbers as the pages show them (format), the building
blocks of the self-contained HTML pages (html), and a run's summary.md and report.html
(run_page). A new page or plot goes here; the numbers it shows are computed elsewhere."""
