"""Generate the example dataset: an insurance-claims triage assistant with a strict answer format.

Every example has the same system prompt, a claim described in varied everyday language, and an
answer in exactly three lines::

    Decision: APPROVE | DENY | NEEDS_INFO | ESCALATE
    Reason: <one sentence>
    Next step: <one sentence>

The decision follows fixed rules (policy lapsed, excluded cause, missing documents, large or
injury claims, below the deductible, else approve the amount minus the deductible), so a
fine-tune can learn both the format and the policy. Output is deterministic for a given seed.

Usage::

    python examples/generate_claims_dataset.py --out examples/claims --seed 7

The sizes fit ``scripts/demo`` on 2 CPU cores with SmolLM2-135M (the example's base model).
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

SYSTEM_PROMPT = (
    "You are ClaimDesk, the claims triage assistant of Northwind Mutual. Read the claim and answer "
    "in exactly three lines:\n"
    "Decision: one of APPROVE, DENY, NEEDS_INFO, ESCALATE\n"
    "Reason: one sentence citing the policy rule that decides the claim\n"
    "Next step: one sentence telling the customer what happens now\n"
    "Rules: deny if the policy was not active on the incident date, if the cause is excluded by the "
    "policy, or if the loss does not exceed the deductible; ask for documents when required ones are "
    "missing; escalate any injury or any loss above $25,000 to a human adjuster; otherwise approve the "
    "loss minus the deductible. Never add other lines."
)

POLICIES = {
    "auto": {
        "deductible": [250, 500, 1000],
        "causes": [
            "a rear-end collision",
            "hail damage",
            "a break-in",
            "a cracked windshield",
            "a parking-lot scrape",
        ],
        "excluded": [
            "street racing",
            "wear and tear on the brakes",
            "driving for a delivery app without cover",
        ],
        "documents": {"a break-in": "a police report"},
    },
    "home": {
        "deductible": [500, 1000, 2500],
        "causes": [
            "a burst pipe",
            "a kitchen fire",
            "storm damage to the roof",
            "a burglary",
            "a fallen tree",
        ],
        "excluded": ["flooding from the river", "termite damage", "mould from a long-term leak"],
        "documents": {"a burglary": "a police report", "a kitchen fire": "the fire department report"},
    },
    "travel": {
        "deductible": [0, 100, 150],
        "causes": ["a cancelled flight", "lost luggage", "a missed connection", "a stolen phone abroad"],
        "excluded": ["a trip cancelled because I changed my mind", "an extreme sports accident"],
        "documents": {
            "lost luggage": "the airline's property irregularity report",
            "a stolen phone abroad": "a local police report",
        },
    },
    "pet": {
        "deductible": [100, 250],
        "causes": ["a broken leg", "swallowing a toy", "an ear infection", "a bite from another dog"],
        "excluded": ["a pre-existing hip condition", "routine vaccinations"],
        "documents": {"swallowing a toy": "the vet's invoice"},
    },
}

NAMES = [
    "Amira",
    "Ben",
    "Chloé",
    "Dmitri",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "Jonas",
    "Keisha",
    "Luca",
    "Maya",
    "Nikhil",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sven",
    "Tariq",
    "Uma",
    "Victor",
    "Wen",
    "Ximena",
    "Yusuf",
    "Zoe",
]

OPENERS = [
    "Hi, I need to file a claim.",
    "Hello,",
    "Claim request:",
    "Good morning. I'm writing about my policy.",
    "Hi there, hoping you can help.",
    "",
]

TEMPLATES = [
    "{opener} My name is {name}, {kind} policy {policy_id}. On {incident} I had {cause}. "
    "The damage comes to ${amount:,}. {status_text} {docs_text}",
    "{opener} Policy {policy_id} ({kind}). Incident date {incident}: {cause}. Estimated loss ${amount:,}. "
    "{docs_text} {status_text} {injury_text}",
    "{name} here. {cause_cap} happened on {incident}, and the bill is ${amount:,}. It's on my {kind} "
    "policy, number {policy_id}. {injury_text} {docs_text}",
    "{opener} Filing for {cause} on {incident} under {kind} policy {policy_id}. Total ${amount:,}. "
    "{status_text}{injury_text} {docs_text}",
]


@dataclass(frozen=True)
class Claim:
    name: str
    kind: str
    policy_id: str
    incident: date
    cause: str
    excluded: bool
    amount: int
    deductible: int
    lapsed: bool
    lapse_date: date | None
    missing_document: str | None
    attached_document: str | None
    injury: bool


def make_claim(rng: random.Random) -> Claim:
    kind = rng.choice(sorted(POLICIES))
    policy = POLICIES[kind]
    excluded = rng.random() < 0.15
    cause = rng.choice(policy["excluded"] if excluded else policy["causes"])
    incident = date(2025, 1, 1) + timedelta(days=rng.randrange(0, 540))
    lapsed = rng.random() < 0.12
    lapse_date = incident - timedelta(days=rng.randrange(3, 90)) if lapsed else None
    required = policy["documents"].get(cause)
    missing = required if required and rng.random() < 0.5 else None
    attached = required if required and not missing else None
    injury = kind in ("auto", "home") and rng.random() < 0.1
    scale = rng.choice([0.2, 1, 1, 3, 10, 40])
    amount = max(40, int(rng.lognormvariate(7.0, 0.8) * scale) // 10 * 10)
    return Claim(
        name=rng.choice(NAMES),
        kind=kind,
        policy_id=f"{kind[:2].upper()}-{rng.randrange(100000, 999999)}",
        incident=incident,
        cause=cause,
        excluded=excluded,
        amount=amount,
        deductible=rng.choice(policy["deductible"]),
        lapsed=lapsed,
        lapse_date=lapse_date,
        missing_document=missing,
        attached_document=attached,
        injury=injury,
    )


def describe(claim: Claim, rng: random.Random) -> str:
    if claim.lapsed and claim.lapse_date is not None:
        status_text = rng.choice(
            [
                f"I think my last payment bounced around {claim.lapse_date:%B %d}.",
                f"The portal says the policy ended on {claim.lapse_date.isoformat()}.",
            ]
        )
    else:
        status_text = rng.choice(["My premiums are paid up.", "Policy is active.", ""])
    if claim.attached_document:
        docs_text = f"I've attached {claim.attached_document}."
    elif claim.missing_document:
        docs_text = rng.choice(["I don't have any paperwork yet.", "No documents attached for now.", ""])
    else:
        docs_text = rng.choice(["Photos attached.", "Receipts attached.", ""])
    injury_text = (
        rng.choice(["My passenger was hurt and went to hospital.", "I injured my wrist."])
        if claim.injury
        else ""
    )
    text = rng.choice(TEMPLATES).format(
        opener=rng.choice(OPENERS),
        name=claim.name,
        kind=claim.kind,
        policy_id=claim.policy_id,
        incident=claim.incident.isoformat() if rng.random() < 0.5 else f"{claim.incident:%B %d, %Y}",
        cause=claim.cause,
        cause_cap=claim.cause[0].upper() + claim.cause[1:],
        amount=claim.amount,
        status_text=status_text,
        docs_text=docs_text,
        injury_text=injury_text,
    )
    return " ".join(text.split())


def decide(claim: Claim) -> tuple[str, str, str]:
    """The answer the assistant must give: (decision, reason, next step)."""
    if claim.lapsed and claim.lapse_date is not None:
        return (
            "DENY",
            f"Policy {claim.policy_id} was not active on {claim.incident.isoformat()} "
            f"(it lapsed on {claim.lapse_date.isoformat()}).",
            "We will email you the lapse notice and how to reinstate cover for future incidents.",
        )
    if claim.excluded:
        return (
            "DENY",
            f"{claim.cause[0].upper() + claim.cause[1:]} is excluded under the {claim.kind} policy terms.",
            "We will send the exclusion clause in writing; you may appeal within 30 days.",
        )
    if claim.injury or claim.amount > 25_000:
        why = "an injury is involved" if claim.injury else f"the loss of ${claim.amount:,} is above $25,000"
        return (
            "ESCALATE",
            f"Claims where {why} must be reviewed by a human adjuster.",
            "An adjuster will contact you within two business days.",
        )
    if claim.missing_document:
        return (
            "NEEDS_INFO",
            f"Claims for {claim.cause} on a {claim.kind} policy require {claim.missing_document}.",
            f"Please upload {claim.missing_document} in the claims portal; we will resume within 24 hours.",
        )
    if claim.amount <= claim.deductible:
        return (
            "DENY",
            f"The loss of ${claim.amount:,} does not exceed your ${claim.deductible:,} deductible.",
            "No payment is due; the claim will be closed and will not affect your premium.",
        )
    payout = claim.amount - claim.deductible
    return (
        "APPROVE",
        f"Covered {claim.kind} loss of ${claim.amount:,} minus the ${claim.deductible:,} deductible.",
        f"We will pay ${payout:,} to your account on file within five business days.",
    )


def example(rng: random.Random) -> dict[str, object]:
    claim = make_claim(rng)
    decision, reason, next_step = decide(claim)
    return {
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": describe(claim, rng)},
            {
                "role": "assistant",
                "content": f"Decision: {decision}\nReason: {reason}\nNext step: {next_step}",
            },
        ]
    }


def generate(
    out: Path, seed: int, train: int, validation: int, test: int, next_week: int = 0
) -> dict[str, int]:
    """Write ``train/validation/test.jsonl`` under ``out``; return the rows written per split.

    ``next_week`` rows more, drawn after the others (so never a duplicate of them), go to
    ``next-week.jsonl``: the new data ``scripts/demo`` continues the champion's fine-tune on.
    """
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    counts = {}
    splits = [("train", train), ("validation", validation), ("test", test)]
    for split, n in splits + ([("next-week", next_week)] if next_week else []):
        rows = []
        while len(rows) < n:
            line = json.dumps(example(rng), ensure_ascii=False)
            if line not in seen:  # no duplicates within or across splits
                seen.add(line)
                rows.append(line)
        (out / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        counts[split] = n
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "claims")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--train", type=int, default=96)
    parser.add_argument("--validation", type=int, default=16)
    parser.add_argument("--test", type=int, default=32)
    parser.add_argument("--next-week", type=int, default=64)
    args = parser.parse_args()
    counts = generate(args.out, args.seed, args.train, args.validation, args.test, args.next_week)
    print(", ".join(f"{split}: {n}" for split, n in counts.items()), "->", args.out)


if __name__ == "__main__":
    main()
