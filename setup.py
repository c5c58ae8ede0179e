"""Installs kdc_tf (library), data_pipeline (datasets and targets) and experiments (binaries)."""

import setuptools

setuptools.setup(
    name="kdc-tf",
    version="0.1.0",
    description="Keypoints as Dynamic Centroids: bottom-up human pose and instance segmentation in TF2",
    packages=setuptools.find_packages(include=["kdc_tf*", "data_pipeline*", "experiments*"]),
    python_requires=">=3.10",
    install_requires=[
        "tensorflow>=2.16,<2.22",
        "keras>=3.0",
        "numpy",
        "pycocotools>=2.0.7",
        "opencv-python-headless",
        "absl-py",
        "tensorboard",
    ],
    extras_require={"test": ["pytest", "hypothesis"]},
)
