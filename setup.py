"""Packaging for yolostitch; README.md gives the set-up commands (the ``dev`` extra adds the test tools)."""

from glob import glob
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
# The built-in YAMLs live at the top of the repository (the source of truth); a built package carries copies in
# yolostitch/_builtin/ with the same layout, which yolostitch/resources.py finds through importlib.resources
# (keep the two lists alike; tests/test_install.py checks a built wheel against the repository).
BUILTIN_FILES = {"models/yaml": "*.yaml", "data": "*.yaml", "data/hyps": "*.yaml"}


class BuildPyWithYamls(build_py):
    """build_py that also copies the built-in YAMLs into the package (wheels, ``pip install [--user] .``).

    An editable install (``pip install -e .``) gets no copies: it reads the repository's folders in place."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for folder, pattern in BUILTIN_FILES.items():
            target = Path(self.build_lib) / "yolostitch" / "_builtin" / folder
            self.mkpath(str(target))
            for source in sorted(glob(str(HERE / folder / pattern))):
                self.copy_file(source, str(target / Path(source).name))

setup(
    name="yolostitch",
    version="0.1.0",
    description="YOLOv5 model stitching: recombine backbones, adapters and heads from a YAML file",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="AGPL-3.0",
    python_requires=">=3.9",
    packages=find_packages(include=["yolostitch", "yolostitch.*"]),
    cmdclass={"build_py": BuildPyWithYamls},  # the built-in model/data/hyp YAMLs go inside the package
    install_requires=[
        # weights_only loading (no code from a checkpoint) is unsafe before 2.6 (CVE-2025-32434); the code also
        # needs torch.serialization.safe_globals (2.5) and torch.amp.GradScaler (2.3). Refused at import if older.
        "torch>=2.6",
        "torchvision>=0.21",  # the torchvision of torch 2.6
        "ultralytics==8.4.190",  # its internals move between releases: one exact version (warned at import)
        "ultralytics-thop>=2.0",  # provides `import thop`; never add PyPI `thop`, which overwrites it
        "opencv-python>=4.6",
        "numpy>=1.23",  # 1.x and 2.x both: metrics falls back to np.trapz where np.trapezoid (2.0) is missing
        "Pillow>=7.1.2",  # image checks (data/scan.py); ultralytics' own minimum
        "matplotlib>=3.3",  # plots (labels.jpg, results.png, compare); ultralytics' own minimum
        "pyyaml>=5.3",
        "safetensors>=0.4",
        "pycocotools>=2.0.7",  # COCO JSON masks (RLE) now, COCO-style evaluation later
        "tqdm>=4.64",
    ],
    extras_require={
        "export": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript", "onnxslim"],  # export.py (ONNX, int8, --simplify)
        "timm": ["timm>=0.9"],  # extract.py --extractor timm:NAME
        # compare.py --stock: what the stock `yolov5==7.0.14` package imports; the package itself goes in apart,
        # with --no-deps (its requirements pull PyPI `thop`, which breaks ultralytics-thop)
        "stock": ["pandas", "seaborn", "packaging>=20"],  # packaging: a pkg_resources stand-in for stock's import
        # tests; the stock reference `yolov5==7.0.14` is installed apart with --no-deps (README): its
        # requirements pull PyPI `thop`, which breaks ultralytics-thop. pandas/seaborn are what it imports.
        "dev": ["pytest>=7", "hypothesis>=6", "pandas", "seaborn", "packaging>=20", "onnx>=1.15", "onnxruntime>=1.17",
                "onnxscript", "onnxslim", "timm>=0.9"],
    },
    entry_points={"console_scripts": ["yolostitch=yolostitch.cli:main"]},
)
