"""Studies: presets (`presets`), the records of their runs (`records`), one run as a job
(`runs`), where runs execute (`executors`, with `lock`), the searches of a tuned study
(`tunespec`, `tune`, `searches`), and `benchmark`, which plans a preset, runs what is missing and
writes its report."""
