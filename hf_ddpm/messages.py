"""Error messages in the words of the interface that shows them: the command line's flags, the web page's controls."""

import re


def with_flag_names(message: str, flags: dict[str, str]) -> str:
    """The message with each `python_name` or --python_name (the training script's flag, which the data loader's
    messages name) that has a name in `flags` written as that name (`num_inference_steps` -> --steps)."""
    return re.sub(
        r"`(\w+)`|--(\w+)", lambda match: flags.get(match.group(1) or match.group(2), match.group(0)), message
    )
