"""The runner's own words in English and 简体中文 (lessons and hints live in their files)."""

from __future__ import annotations

import os
import unicodedata

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"en": "LoRA kata: your progress", "zh": "LoRA kata：学习进度"},
    "done": {"en": "done", "zh": "已完成"},
    "failing": {"en": "failing", "zh": "未通过"},
    "not started": {"en": "not started", "zh": "未开始"},
    "broken": {"en": "broken", "zh": "无法导入"},
    "waiting": {"en": "waiting for {req}", "zh": "等待 {req} 完成"},
    "waiting plain": {"en": "waiting", "zh": "等待中"},
    "skipped": {"en": "skipped here", "zh": "本机跳过"},
    "not run": {"en": "not run", "zh": "本次未运行"},
    "last run": {"en": "last run: {status}", "zh": "上次：{status}"},
    "tests": {"en": "tests", "zh": "个测试"},
    "exercises done": {"en": "exercises done", "zh": "个练习已完成"},
    "next": {"en": "Next", "zh": "下一步"},
    "edit": {"en": "edit", "zh": "编辑"},
    "lesson": {"en": "lesson", "zh": "讲义"},
    "hint": {"en": "Hint", "zh": "提示"},
    "more hints": {"en": "more help", "zh": "更多提示"},
    "details": {"en": "full failures", "zh": "完整报错"},
    "start": {
        "en": "Start here: open {file}, find `TODO({id})` and replace the "
        "`raise NotImplementedError(...)` under it.",
        "zh": "从这里开始：打开 {file}，找到 `TODO({id})`，替换其下的 "
        "`raise NotImplementedError(...)`。",
    },
    "broken detail": {
        "en": "{where} does not import, so every test that needs it fails. Fix it first:",
        "zh": "{where} 无法导入，依赖它的测试全部失败。请先修好它：",
    },
    "timeout": {
        "en": "stopped after {seconds:g} s: an endless loop, or far too much work, in {where}?",
        "zh": "运行超过 {seconds:g} 秒被终止：{where} 里是否有死循环或多余的大量计算？",
    },
    "waiting skip": {
        "en": "finish {req} first ({title}); run anyway with --run-waiting",
        "zh": "请先完成 {req}（{title}）；如仍要运行，加 --run-waiting",
    },
    "all done": {
        "en": "Every exercise is done. Run the capstone for real on a GPU: "
        "python -m {package}.finetune --model facebook/opt-6.7b",
        "zh": "所有练习都已完成！在 GPU 上完整运行毕业项目："
        "python -m {package}.finetune --model facebook/opt-6.7b",
    },
    "example": {"en": "example", "zh": "反例"},
    "other failures": {
        "en": "(and {n} more failing in this exercise)",
        "zh": "（本练习还有 {n} 个失败）",
    },
    "impl": {"en": "testing: {impl}", "zh": "正在测试：{impl}"},
    "changed since": {"en": "changed since its last run", "zh": "上次运行后代码已改动"},
    "changed run": {
        "en": "Its code changed since it last ran, so its old result no longer counts: "
        "pytest exercises/ -k test_{id}",
        "zh": "上次运行后相关代码有改动，旧结果不再算数，请重新运行："
        "pytest exercises/ -k test_{id}",
    },
    "does not compile": {"en": "{where} does not compile", "zh": "{where} 有语法错误"},
    "fix unparsable": {
        "en": "Not done yet: {where} does not compile. Fix it, then run the kata again:",
        "zh": "还没有完成：{where} 有语法错误，修好后请重新运行：",
    },
    "from run": {
        "en": "from the run at {time}, {ago} ago",
        "zh": "来自 {time} 的运行（{ago}前）",
    },
    "changed files": {"en": "files changed since: {files}", "zh": "此后改动过的文件：{files}"},
    "no changes": {"en": "no file changed since", "zh": "此后没有文件改动"},
    "raised": {
        "en": "{error_type}: {message}",
        "zh": "抛出了 {error_type}：{message}",
    },
    "test": {"en": "test", "zh": "测试"},
    "no progress": {
        "en": "No progress yet: run `pytest exercises/` first.",
        "zh": "还没有进度记录：请先运行 `pytest exercises/`。",
    },
    "none": {"en": "(none)", "zh": "（无）"},
    "after": {"en": "after {ids}", "zh": "需先完成 {ids}"},
    "try finish first": {
        "en": "finish {id} first: {function} is still a stub.",
        "zh": "请先完成练习 {id}：{function} 还是桩代码。",
    },
    "picture": {"en": "picture", "zh": "图"},
    "took": {"en": "(took {seconds:.1f} s)", "zh": "（用时 {seconds:.1f} 秒）"},
    "no experiment": {
        "en": "no experiment for {key}; the lessons with one are {known}",
        "zh": "第 {key} 课没有实验；有实验的课是 {known}",
    },
    "watching": {
        "en": "watching {folder}/*.py — save a file to rerun; Ctrl-C to stop",
        "zh": "正在监视 {folder}/*.py——保存文件即重新运行；按 Ctrl-C 停止",
    },
    "rerunning": {"en": "saved {saved}: rerunning {ids}", "zh": "已保存 {saved}：重新运行 {ids}"},
    "rechecking": {"en": "rechecking {ids}", "zh": "正在复查 {ids}"},
    "pytest stopped": {
        "en": "pytest stopped with exit code {code}:",
        "zh": "pytest 异常退出，退出码 {code}：",
    },
    "missing name": {
        "en": "{file} has no `{name}`. The tests import exactly the names in the kata's API; "
        "did you rename or delete `{name}`?",
        "zh": "{file} 里没有 `{name}`。测试按 kata 的 API 导入这些名字，一个不差；"
        "你是不是把 `{name}` 改名或删掉了？",
    },
    "reset unreadable": {
        "en": "cannot read {file} at {ref} from git: {error}\n"
        "Pass the commit holding the original stubs with --from REF.",
        "zh": "无法从 git 读取 {ref} 处的 {file}：{error}\n"
        "请用 --from REF 指定保存着原始桩代码的提交。",
    },
    "reset unparsable": {
        "en": "{file} does not parse (line {line}): fix it, or restore the whole file with "
        "`git checkout {ref} -- {file}`.",
        "zh": "{file} 无法解析（第 {line} 行）：请先修好它，或用 `git checkout {ref} -- {file}` "
        "恢复整个文件。",
    },
    "reset done": {
        "en": "reset {names} in {file} (from {ref}); your version is saved in {saved}",
        "zh": "已把 {file} 中的 {names} 恢复为桩代码（来自 {ref}）；你的版本保存在 {saved}",
    },
    "all failures": {"en": "Every failing test", "zh": "全部未通过的测试"},
    "kata is": {
        "en": "The kata is `pytest exercises/`. (Plain `pytest` here would be the kata's own "
        "quality suite: `pytest tests/` or LORA_KATA_QUALITY=1 pytest runs it.)",
        "zh": "做练习请运行 `pytest exercises/`。（在这里直接运行 pytest 会跑 kata 自身的质量测试；"
        "确实要跑，请用 `pytest tests/` 或 LORA_KATA_QUALITY=1 pytest。）",
    },
}


def language(explicit: str | None = None) -> str:
    """'zh' or 'en': --lang, then LORA_KATA_LANG, then a Chinese locale, else English."""
    for value in (explicit, os.environ.get("LORA_KATA_LANG")):
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


def t(key: str, lang: str, **fields: object) -> str:
    entry = MESSAGES[key]
    return (entry.get(lang) or entry["en"]).format(**fields)


def colon(lang: str) -> str:
    """ ": " in English, "：" (full width, no space) in Chinese."""
    return "：" if lang == "zh" else ": "


def label(key: str, lang: str) -> str:
    """A label and its colon: "Next: " in English, "下一步：" in Chinese."""
    return t(key, lang) + colon(lang)


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal: a Chinese character takes two."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)
