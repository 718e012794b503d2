"""The experiments, one per lesson that has one, and what the learner should look for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lora_kata.experiments import memory, merging, padding, rank, spectrum, training


@dataclass(frozen=True)
class Experiment:
    id: str
    title: dict[str, str]
    run: Callable
    look_for: dict[str, str]

    def title_in(self, lang: str) -> str:
        return self.title.get(lang) or self.title["en"]

    def look_for_in(self, lang: str) -> str:
        return self.look_for.get(lang) or self.look_for["en"]


EXPERIMENTS: dict[str, Experiment] = {
    e.id: e
    for e in (
        Experiment(
            "01",
            {"en": "Rank sweep: how small can r be?", "zh": "秩扫描：r 能取多小？"},
            rank.rank_sweep,
            {
                "en": "Look for: the loss falls fast from r = 1 to 4 and then barely moves, at a "
                "tiny fraction of the full ΔW's parameters. The target update has a fast-decaying "
                "spectrum, like the updates the LoRA paper (§7) measured.",
                "zh": "看什么：r 从 1 到 4 时损失迅速下降，之后几乎不变，"
                "而参数量只是完整 ΔW 的一小部分。"
                "目标更新量的奇异值衰减很快，和 LoRA 论文第 7 节测到的更新量一样。",
            },
        ),
        Experiment(
            "02",
            {"en": "α/r against α/√r at large r", "zh": "大 r 时 α/r 与 α/√r 的对比"},
            rank.scaling_at_large_r,
            {
                "en": "Look for: with α/r, the larger r is, the slower the loss falls (the update "
                "is divided by r); with α/√r (rsLoRA) the curves stay together as r grows.",
                "zh": "看什么：用 α/r 时，r 越大损失下降越慢（更新量被 r 除掉了）；"
                "用 α/√r（rsLoRA）时，r 变大，各条曲线仍然靠在一起。",
            },
        ),
        Experiment(
            "03",
            {"en": "A memory budget for opt-6.7b", "zh": "opt-6.7b 的显存账"},
            memory.budget,
            {
                "en": "Look for: 13 GB in fp16 and about 7 GB in 8-bit (the tutorial's figures), "
                "over 100 GB for full fine-tuning with Adam, and how activations — tokens per "
                "micro-batch, checkpointing — decide whether training fits in 16 or 20 GB.",
                "zh": "看什么：fp16 约 13 GB、8 位约 7 GB（与教程一致），"
                "全量微调加 Adam 超过 100 GB；"
                "训练能否放进 16 GB 或 20 GB，取决于激活值——"
                "每个微批次的 token 数和是否开梯度检查点。",
            },
        ),
        Experiment(
            "05",
            {"en": "Merged against unmerged: latency and output", "zh": "合并与未合并：延迟与输出"},
            merging.latency,
            {
                "en": "Look for: merged costs what the base layer costs, unmerged a little more "
                "(two thin matmuls); the outputs agree to float rounding.",
                "zh": "看什么：合并后与基础层一样快，未合并稍慢（多两次细长的矩阵乘）；"
                "两者输出只差浮点舍入。",
            },
        ),
        Experiment(
            "06",
            {"en": "Padding waste of the quotes", "zh": "名言数据的填充浪费"},
            padding.padding_waste,
            {
                "en": "Look for: at batch 4 a noticeable share of every micro-batch is padding "
                "(computed, then thrown away); sorting by length shrinks it, packing (exercise 11) "
                "removes it.",
                "zh": "看什么：批大小为 4 时，每个微批次里有相当一部分是填充（算了又丢掉）；"
                "按长度排序能减少它，打包（练习 11）能消除它。",
            },
        ),
        Experiment(
            "08",
            {
                "en": "Warmup on and off; accumulation against a big batch",
                "zh": "预热开与关；梯度累积与大批次",
            },
            training.warmup_and_accumulation,
            {
                "en": "Look for: without warmup the first steps at a large learning rate jump "
                "around; 4 micro-batches of 4 and one batch of 16 give the same curve (the gap is "
                "float rounding) because the rows hold similar numbers of tokens.",
                "zh": "看什么：不预热时，大学习率下最初几步会乱跳；"
                "4 个大小为 4 的微批次与一个大小为 16 的批次"
                "曲线重合（差距只是浮点舍入），因为各行的 token 数相近。",
            },
        ),
        Experiment(
            "10",
            {
                "en": "The trained ΔW: low-rank, and how it meets W0",
                "zh": "训练后的 ΔW：低秩，以及它与 W0 的关系",
            },
            spectrum.trained_delta,
            {
                "en": "Look for: most of ΔW's energy sits in its first few singular values, far "
                "below the rank r allows; and the amplification factor of §7.3 (here on a small "
                "random base, so read the method, not the numbers).",
                "zh": "看什么：ΔW 的能量大多集中在前几个奇异值上，远低于 r 允许的秩；"
                "以及第 7.3 节的放大系数"
                "（这里的基础模型是随机的小模型，看方法，不看数值）。",
            },
        ),
    )
}
