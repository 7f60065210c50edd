"""The built-in tunnel protocols' specs: importing this module describes them."""

from podnet.specs import geneve, vxlan  # noqa: F401  (importing describes them)
