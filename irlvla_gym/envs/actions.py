"""Moved to :mod:`irlvla_gym.plans.codec` (the plan <-> action codec is shared by every layer); this old import path
keeps working."""

from irlvla_gym.plans.codec import *  # noqa: F401,F403
from irlvla_gym.plans.codec import __all__  # noqa: F401
