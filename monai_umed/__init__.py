# Copyright (c) monai_umed contributors. Licensed under the Apache License, Version 2.0.
"""UMed: unlearnable medical image segmentation datasets (Lin et al., IJCAI 2024) for MONAI."""

__version__ = "0.1.0"
