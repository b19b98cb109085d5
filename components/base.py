"""What every component shares: the platform image and the component decorator."""

from functools import partial

from kfp import dsl

from flywheel import names

# The platform image (one name for charts and code); it holds flywheel and kfp, so nothing
# is installed when a step starts. Nothing of the compiling machine's settings is used.
BASE_IMAGE = names.IMAGE

component = partial(dsl.component, base_image=BASE_IMAGE, install_kfp_package=False)
