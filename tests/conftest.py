"""Shared test settings: hypothesis without deadlines (jit compile times vary on shared CPUs)."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
  'snjax',
  deadline=None,
  max_examples=int(os.environ.get('SNJAX_HYPOTHESIS_EXAMPLES', '25')),
  suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile('snjax')
