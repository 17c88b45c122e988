"""NVIDIA FLARE integration: the Guard as a client task-data filter
(:mod:`~gradguard.integrations.nvflare.filter`) and the demo's federation in NVFlare's
simulator (:mod:`~gradguard.integrations.nvflare.engine`). Needs the ``nvflare`` extra."""
