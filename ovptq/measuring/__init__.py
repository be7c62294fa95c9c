"""The stages that measure the INT8 model and feed back into the plan, after the rewrite has built it:

    trial.py             the one trial service: a plan change in, a rebuilt and measured model out
    safety_net.py        INT8 against FP32 outputs: localise the quantizers that cause the error, repair them
    speed_check.py       with target_device="CPU": INT8 against FP32 per layer on this CPU, replayable decisions
    accuracy_control.py  `quantize_with_accuracy_control`: the caller's metric within max_drop
    measure.py           SQNR, shadow layers and ablation, for these stages and the per-layer report

None of them writes a model: each asks the trial service for a plan change, which the rewrite builds.
"""
