"""Moved to :mod:`irlvla_gym.plans.vocabulary`; this old import path keeps working."""

from irlvla_gym.plans.vocabulary import *  # noqa: F401,F403
from irlvla_gym.plans.vocabulary import __all__  # noqa: F401

if __name__ == "__main__":  # the old spelling of ``python -m irlvla_gym.plans.vocabulary``
    main()  # noqa: F405
