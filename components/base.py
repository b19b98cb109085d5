"""What every component shares: the platform image and the component decorator."""

from functools import partial

from kfp import dsl

from flywheel.settings import get_settings

BASE_IMAGE = get_settings().image

# The platform image holds flywheel and kfp: install nothing when a step starts.
component = partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)
