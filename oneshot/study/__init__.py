"""Studies: presets (`presets`), the records of their runs (`records`), one run as a job
(`runs`), where runs execute (`executors`, with `lock`), and `benchmark`, which plans a preset,
runs what is missing and writes its report."""
