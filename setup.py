"""Packaging for yolostitch; README.md gives the set-up commands (the ``dev`` extra adds the test tools)."""

from glob import glob

from setuptools import find_packages, setup

setup(
    name="yolostitch",
    version="0.1.0",
    description="YOLOv5 model stitching: recombine backbones, adapters and heads from a YAML file",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0",
    python_requires=">=3.9",
    packages=find_packages(include=["yolostitch", "yolostitch.*"]),
    # model and data YAMLs live at the top of the source tree; installed copies go to <prefix>/share/yolostitch
    data_files=[
        ("share/yolostitch/models/yaml", glob("models/yaml/*.yaml")),
        ("share/yolostitch/data", glob("data/*.yaml")),
        ("share/yolostitch/data/hyps", glob("data/hyps/*.yaml")),
    ],
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",
        "ultralytics==8.4.190",  # its internals move between releases: one exact version
        "ultralytics-thop>=2.0",  # provides `import thop`; never add PyPI `thop`, which overwrites it
        "opencv-python>=4.6",
        "numpy>=1.23",
        "pyyaml>=5.3",
        "safetensors>=0.4",
        "pycocotools>=2.0.7",  # COCO JSON masks (RLE) now, COCO-style evaluation later
        "tqdm>=4.64",
    ],
    extras_require={
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript"],  # export.py (ONNX, int8)
        "timm": ["timm>=0.9"],  # extract.py --extractor timm:NAME
        # compare.py --stock: what the stock `yolov5==7.0.14` package imports; the package itself goes in apart,
        # with --no-deps (its requirements pull PyPI `thop`, which breaks ultralytics-thop)
        "stock": ["pandas", "seaborn"],
        # tests; the stock reference `yolov5==7.0.14` is installed apart with --no-deps (README): its
        # requirements pull PyPI `thop`, which breaks ultralytics-thop. pandas/seaborn are what it imports.
        "dev": ["pytest>=7", "hypothesis>=6", "pandas", "seaborn", "onnx>=1.15", "onnxruntime>=1.17", "onnxscript",
                "timm>=0.9"],
    },
    entry_points={"console_scripts": ["yolostitch=yolostitch.cli:main"]},
)
