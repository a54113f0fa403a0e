"""The samplers a pipeline can be given by name, and how each is called for people. Nothing heavy is imported here, so
that the command line lists them at once; `hf_ddpm.sampling.SCHEDULERS` maps each name to its class."""

SCHEDULER_NAMES = {
    "ddpm": "DDPM",
    "ddim": "DDIM",
    "dpm": "DPM-Solver++ (2M)",
    "euler": "Euler",
    "unipc": "UniPC",
}
