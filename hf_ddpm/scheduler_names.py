"""The samplers a pipeline can be given by name, and how each is called for people. Nothing heavy is imported here, so
that the command line lists them at once; `hf_ddpm.sampling.SCHEDULERS` maps each name to its class."""

SCHEDULER_NAMES = {
    "ddpm": "DDPM",
    "ddim": "DDIM",
    "dpm": "DPM-Solver++ (2M)",
    "euler": "Euler",
    "unipc": "UniPC",
}

# Where a sampler's steps fall among the training timesteps (Lin et al. 2023, https://arxiv.org/abs/2305.08891, Table
# 2): the schedulers' own `TIMESTEP_SPACINGS`, named here too so that the command line need not import them.
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
