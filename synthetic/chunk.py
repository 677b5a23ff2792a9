"""One chunk of customers, generated start to finish in one process."""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import numpy as np
from faker import Faker

from atende.synthetic.catalogue import CATEGORIES, build_agents, build_products
from atende.synthetic.channels import ChannelWriter
from atende.synthetic.commerce import CommerceWriter
from atende.synthetic.contacts import ContactPlanner
from atende.synthetic.ids import IdFactory, derive_seed
from atende.synthetic.output import BRT, ChunkOutput
from atende.synthetic.people import PeopleBuilder

TRUTH_PARTS = ".parts"

_faker: Faker | None = None


def _process_faker() -> Faker:
    # building the pt_BR provider tables once per process; each chunk reseeds it
    global _faker
    if _faker is None:
        _faker = Faker("pt_BR")
    return _faker


@dataclass(frozen=True)
class ChunkTask:
    out: str
    chunk: int
    first_index: int
    count: int
    total_customers: int
    days: int
    seed: int
    start: date


@dataclass(frozen=True)
class ChunkResult:
    chunk: int
    # source -> (records, duplicates, malformed, files)
    counts: dict[str, tuple[int, int, int, int]]
    truth_records: int


def generate_chunk(task: ChunkTask) -> ChunkResult:
    root = Path(task.out)
    faker = _process_faker()
    faker.seed_instance(derive_seed(task.seed, task.chunk, 1))
    ids = IdFactory(task.chunk, task.seed)
    out = ChunkOutput(root, task.chunk, task.seed, task.start, task.days)
    products = build_products(task.seed)
    by_category = {cat: tuple(p for p in products if p.category == cat) for cat in CATEGORIES}
    agents = build_agents(task.seed)
    people, phonebook = PeopleBuilder(
        chunk=task.chunk, first_index=task.first_index, total_customers=task.total_customers, seed=task.seed,
        start=task.start, days=task.days, faker=faker, ids=ids,
    ).build(task.count)

    rnd = random.Random(derive_seed(task.seed, task.chunk, 2))
    rng = np.random.default_rng([task.seed, task.chunk, 3])

    def protocol(ts: int) -> str:
        return ids.protocol(datetime.fromtimestamp(ts, BRT).strftime("%Y%m%d"))

    planner = ContactPlanner(rnd=rnd, rng=rng, agents=agents, days=task.days, start_epoch=out.start_epoch,
                             products_by_category=by_category, protocol=protocol)
    channels = ChannelWriter(out=out, ids=ids, rnd=rnd, phonebook=phonebook, planner=planner)
    commerce = CommerceWriter(out=out, ids=ids, rnd=rnd, rng=rng, products_by_category=by_category, days=task.days)
    for person in people:
        contacts = planner.plan(person)
        for contact in contacts:
            channels.render(contact)
            commerce.survey_after(contact)
        commerce.crm(person)
        commerce.orders(person)
        commerce.actions(person, contacts)
        commerce.relationship_nps(person)

    counts = out.flush()
    parts = root / "_truth" / TRUTH_PARTS
    out.write_truth(parts)
    with (parts / f"people-{task.chunk:05d}.csv").open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        for person in people:
            writer.writerow((person.person_id, person.persona.key, person.preferred_tone,
                             ";".join(person.favourite_categories)))
    return ChunkResult(
        chunk=task.chunk,
        counts={s: (c.records, c.duplicates, c.malformed, c.files) for s, c in counts.items()},
        truth_records=len(out.truth),
    )
