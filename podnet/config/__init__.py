"""podnet's settings: the agent's frozen configuration (``agent``), its BGP section (``bgp``),
``--set`` pairs (``pairs``) and the one error type (``errors``). Nothing here imports the
datapath, IPAM or agent code: valid choices come from ``podnet.registry``."""

from podnet.config.agent import (
    ENV_PREFIX,
    MTU_MAX,
    MTU_MIN,
    AgentConfig,
    load_config,
    load_config_file,
    one_setting,
)
from podnet.config.errors import ConfigError
from podnet.config.pairs import merge, parse_pairs

__all__ = [
    "ENV_PREFIX",
    "MTU_MAX",
    "MTU_MIN",
    "AgentConfig",
    "ConfigError",
    "load_config",
    "load_config_file",
    "merge",
    "one_setting",
    "parse_pairs",
]
