"""The ``--amp`` flag shared by train, val, detect and compare (the policy is ``engine.precision``; this module
imports no torch, so building the parser stays fast)."""

from __future__ import annotations

import argparse

AMP_CHOICES = ("auto", "off")  # engine.precision.AMP_MODES (a test keeps them equal)


def add_amp_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--amp", default="auto", choices=AMP_CHOICES,
                   help="mixed precision: auto = bf16 autocast + channels-last on CPUs with native bf16 "
                        "(AVX512-BF16/AMX), fp16 + GradScaler on CUDA, fp32 elsewhere; off = fp32 throughout")
