"""When people reach out, on which channel and about what, and how it goes.

The outcome model is the ground truth later models must recover: an agent
writes in a tone (mostly their own style, sometimes adapted to the customer),
and both resolution and satisfaction rise when that tone is the one the
customer prefers.
"""
from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import accumulate
from types import MappingProxyType

import numpy as np

from atende.synthetic.catalogue import (
    BOT_CONTAINMENT,
    HOUR_PROFILES,
    PERSONAS,
    TONES,
    TOPIC_MOOD,
    TOPIC_RESOLUTION,
    Agent,
    Persona,
    Product,
)
from atende.synthetic.output import BRT, DAY
from atende.synthetic.people import Person
from atende.synthetic.texts import (
    AGENT_ASK_INFO,
    AGENT_CLOSERS,
    AGENT_OPENERS,
    BOT_ANSWERS,
    BOT_GREETINGS,
    BOT_HANDOFF,
    BOT_RESOLVED,
    BOT_SORRY,
    CUSTOMER_ASK_HUMAN,
    CUSTOMER_BOT_GIVEUP,
    CUSTOMER_DETAILS,
    CUSTOMER_MENU_CHOICE,
    CUSTOMER_OPENERS,
    CUSTOMER_THANKS,
    CUSTOMER_UNHAPPY,
    FACTS_PENDING,
    FACTS_RESOLVED,
    MONTHS,
    WRAP_PENDING,
    WRAP_RESOLVED,
    capitalise,
    casualise,
    pick,
    product_slots,
)

# share of conversations a bot answers first
BOT_SHARE: Mapping[str, float] = MappingProxyType({
    "chatbot": 1.0, "webchat": 0.55, "app": 0.5, "whatsapp": 0.6, "messenger": 0.4, "telegram": 0.45,
    "instagram": 0.2, "facebook": 0.25, "twitter": 0.0, "linkedin": 0.0, "email": 0.0, "voice": 0.0,
})
# median seconds a customer waits in queue for a human, per channel
QUEUE_MEDIAN: Mapping[str, float] = MappingProxyType({
    "webchat": 90, "app": 120, "chatbot": 150, "whatsapp": 240, "telegram": 400, "messenger": 600,
    "instagram": 900, "facebook": 1200, "twitter": 1500, "linkedin": 3600,
})
# products that can break down, for technical contacts
TECHNICAL_CATEGORIES = ("celulares", "informatica", "eletrodomesticos", "tv_e_audio", "games")
# how casually people type on each channel
CASUAL_LEVEL: Mapping[str, float] = MappingProxyType({
    "whatsapp": 0.7, "instagram": 0.7, "telegram": 0.7, "twitter": 0.6, "messenger": 0.6, "facebook": 0.5,
    "chatbot": 0.5, "app": 0.4, "webchat": 0.3, "linkedin": 0.1, "email": 0.0,
})
_RESOLUTION_SHIFT = MappingProxyType({
    "digital_native": 0.0, "busy_professional": 0.0, "senior_traditional": -0.02, "family_budget": 0.0,
    "premium_loyal": 0.06, "churn_risk": -0.1,
})


@dataclass(slots=True)
class Turn:
    ts: int
    author: str          # customer | bot | agent
    text: str


@dataclass(slots=True)
class Contact:
    person: Person
    channel: str
    topic: str
    start: int
    follow_up: bool
    agent: Agent | None = None
    tone: str | None = None
    bot: bool = False
    bot_only: bool = False
    resolved: bool = False
    satisfaction: float = 0.5
    disposition: str | None = None      # calls only
    end: int = 0
    turns: list[Turn] = field(default_factory=list)
    handoff_at: int | None = None
    record_id: str | None = None        # conversation_id / call_id, what a survey can refer to
    phone_used: str | None = None       # national digits of the line used (calls, WhatsApp)
    email_used: str | None = None

    @property
    def tone_matched(self) -> bool:
        return self.tone is not None and self.tone == self.person.preferred_tone


@dataclass(frozen=True)
class _PersonaTables:
    channels: tuple[str, ...]
    channel_cum: tuple[float, ...]
    topics: tuple[str, ...]
    topic_cum: tuple[float, ...]
    hour_cum: tuple[float, ...]


def _tables(persona: Persona) -> _PersonaTables:
    return _PersonaTables(
        channels=tuple(persona.channels), channel_cum=tuple(accumulate(persona.channels.values())),
        topics=tuple(persona.topics), topic_cum=tuple(accumulate(persona.topics.values())),
        hour_cum=tuple(accumulate(HOUR_PROFILES[persona.hours])),
    )


TABLES: Mapping[str, _PersonaTables] = MappingProxyType({p.key: _tables(p) for p in PERSONAS})
_HOURS = tuple(range(24))


def can_use(person: Person, channel: str) -> bool:
    if channel == "whatsapp":
        return person.whatsapp_phone is not None
    if channel == "email":
        return bool(person.emails)
    if channel == "voice":
        return bool(person.phones)
    if channel in ("telegram", "messenger", "instagram", "facebook", "twitter", "linkedin"):
        return channel in person.handles
    return True


class ContactPlanner:
    """Plans each person's contacts, decides how they go, and writes the dialogue of text channels."""

    def __init__(self, *, rnd: random.Random, rng: np.random.Generator, agents: Sequence[Agent], days: int,
                 start_epoch: int, products_by_category: Mapping[str, Sequence[Product]],
                 protocol: Callable[[int], str]) -> None:
        self.rnd = rnd
        self.rng = rng
        self.agents = agents
        self.days = days
        self.start_epoch = start_epoch
        self.products_by_category = products_by_category
        self.protocol = protocol

    # ---------------------------------------------------------------- planning
    def plan(self, person: Person) -> list[Contact]:
        if person.activity <= 0:
            return []
        persona = person.persona
        tables = TABLES[persona.key]
        expected = persona.contacts_per_month * self.days / 30.0 * person.activity
        count = int(self.rng.poisson(expected))
        contacts: list[Contact] = []
        rnd = self.rnd
        for _ in range(count):
            day = rnd.randrange(self.days)
            hour = rnd.choices(_HOURS, cum_weights=tables.hour_cum)[0]
            start = self.start_epoch + day * DAY + hour * 3600 + rnd.randrange(3600)
            channel = self._channel(person, tables)
            topic = rnd.choices(tables.topics, cum_weights=tables.topic_cum)[0]
            contact = Contact(person=person, channel=channel, topic=topic, start=start, follow_up=False)
            self.decide(contact)
            contacts.append(contact)
            # unresolved problems come back, same topic, often on another channel (what FCR measures)
            previous = contact
            for _ in range(2):
                if previous.resolved or rnd.random() > 0.55:
                    break
                delay = int(rnd.choice((2, 6, 20, 30, 50, 75)) * 3600 * rnd.uniform(0.5, 1.5))
                again = previous.start + 3600 + delay if previous.disposition != "abandoned" \
                    else previous.start + rnd.randrange(120, 1800)
                if again >= self.start_epoch + self.days * DAY:
                    break
                channel = previous.channel if rnd.random() < 0.5 else self._channel(person, tables)
                follow = Contact(person=person, channel=channel, topic=previous.topic, start=again, follow_up=True)
                self.decide(follow)
                contacts.append(follow)
                previous = follow
        contacts.sort(key=lambda c: c.start)
        return contacts

    def _channel(self, person: Person, tables: _PersonaTables) -> str:
        for _ in range(4):
            channel = self.rnd.choices(tables.channels, cum_weights=tables.channel_cum)[0]
            if can_use(person, channel):
                return channel
        return "webchat" if self.rnd.random() < 0.6 else "app"

    # ---------------------------------------------------------------- outcome
    def decide(self, c: Contact) -> None:
        rnd = self.rnd
        persona = c.person.persona
        if c.channel == "voice":
            r = rnd.random()
            c.disposition = "abandoned" if r < 0.09 else "voicemail" if r < 0.12 else \
                "transferred" if r < 0.19 else "answered"
        c.bot = rnd.random() < BOT_SHARE[c.channel]
        if c.bot:
            containment = BOT_CONTAINMENT[c.topic] * (1.2 if persona.key == "digital_native" else
                                                      0.6 if persona.key == "senior_traditional" else 1.0)
            if rnd.random() < containment:
                c.bot_only, c.resolved = True, True
            elif rnd.random() < 0.08:
                c.bot_only, c.resolved = True, False  # gave up on the bot
        if not c.bot_only and c.disposition not in ("abandoned", "voicemail"):
            c.agent = self.agents[rnd.randrange(len(self.agents))]
            r = rnd.random()
            c.tone = c.agent.style if r < 0.6 else c.person.preferred_tone if r < 0.75 else TONES[rnd.randrange(4)]
            p = TOPIC_RESOLUTION[c.topic] + _RESOLUTION_SHIFT[persona.key] + (0.1 if c.tone_matched else -0.03)
            if c.disposition == "transferred":
                p -= 0.15
            c.resolved = rnd.random() < min(0.97, max(0.05, p))
        s = persona.satisfaction + c.person.sat_offset + TOPIC_MOOD[c.topic]
        if c.agent is not None:
            s += 0.13 if c.tone_matched else -0.04
        s += 0.12 if c.resolved else -0.14
        if c.disposition in ("abandoned", "voicemail"):
            s -= 0.12
        if c.follow_up:
            s -= 0.05
        s += float(self.rng.normal(0.0, 0.08))
        c.satisfaction = min(1.0, max(0.0, s))

    # ---------------------------------------------------------------- dialogue
    def slots(self, c: Contact) -> dict[str, str]:
        rnd = self.rnd
        categories = TECHNICAL_CATEGORIES if c.topic == "technical" else c.person.favourite_categories
        products = self.products_by_category[categories[rnd.randrange(len(categories))]]
        product = products[rnd.randrange(len(products))]
        when = datetime.fromtimestamp(c.start, BRT)
        bought = datetime.fromtimestamp(c.start - rnd.randrange(1, 12) * DAY, BRT)
        return {
            **product_slots(product.name),
            "nome": c.person.first_name,
            "agente": c.agent.name.split()[0] if c.agent else "Tina",
            "pedido": f"#{rnd.randrange(1_000_000, 9_999_999)}",
            "valor": f"{rnd.randrange(20, 900)},{rnd.choice(('00', '90', '99', '50'))}",
            "mes": MONTHS[when.month - 1],
            "dias": str(rnd.randrange(3, 16)),
            "dia": f"{bought.day:02d}/{bought.month:02d}",
            "protocolo": self.protocol(c.start),
        }

    def dialogue(self, c: Contact, day_end: int) -> None:
        """Fill c.turns, c.handoff_at and c.end; keeps the whole conversation inside its start day."""
        rnd = self.rnd
        slots = self.slots(c)
        casual = CASUAL_LEVEL.get(c.channel, 0.3)
        turns: list[tuple[int, str, str]] = []
        t = 0

        def say(author: str, text: str, after: tuple[int, int]) -> None:
            nonlocal t
            t += rnd.randrange(*after)
            if author == "customer":
                text = casualise(text.format_map(slots), rnd, casual)
            turns.append((t, author, text))

        if c.channel == "whatsapp" and rnd.random() < 0.35:
            turns.append((0, "customer", casualise(pick(rnd, ("Oi", "Olá", "Boa tarde", "Bom dia", "Oi, tudo bem?")),
                                                   rnd, casual)))
            t = rnd.randrange(3, 25)
        turns.append((t, "customer", casualise(pick(rnd, CUSTOMER_OPENERS[c.topic]).format_map(slots), rnd, casual)))
        handoff = None
        if c.bot:
            say("bot", pick(rnd, BOT_GREETINGS), (1, 4))
            say("customer", pick(rnd, CUSTOMER_MENU_CHOICE[c.topic]), (8, 60))
            if rnd.random() < 0.1:
                say("bot", pick(rnd, BOT_SORRY), (1, 3))
                say("customer", pick(rnd, CUSTOMER_MENU_CHOICE[c.topic]), (8, 40))
            say("bot", pick(rnd, BOT_ANSWERS[c.topic]), (1, 3))
            if c.bot_only and c.resolved:
                if rnd.random() < 0.7:
                    say("customer", pick(rnd, CUSTOMER_THANKS), (15, 120))
                say("bot", pick(rnd, BOT_RESOLVED), (1, 3))
            elif c.bot_only:
                if rnd.random() < 0.5:
                    say("customer", pick(rnd, CUSTOMER_BOT_GIVEUP), (10, 90))
            else:
                say("customer", pick(rnd, CUSTOMER_ASK_HUMAN), (10, 90))
                say("bot", pick(rnd, BOT_HANDOFF), (1, 3))
                handoff = t
        if c.agent is not None and c.tone is not None:
            tone = c.tone
            median = QUEUE_MEDIAN.get(c.channel, 300)
            t += int(min(3 * 3600, median * math.exp(float(self.rng.normal(0.0, 0.7)))))
            say("agent", pick(rnd, AGENT_OPENERS[tone]).format_map(slots), (0, 1))
            if rnd.random() < 0.6:
                say("agent", pick(rnd, AGENT_ASK_INFO[tone]), (10, 60))
                say("customer", pick(rnd, CUSTOMER_DETAILS[c.topic]), (20, 240))
            facts = FACTS_RESOLVED if c.resolved else FACTS_PENDING
            wraps = WRAP_RESOLVED if c.resolved else WRAP_PENDING
            fact = pick(rnd, facts[c.topic]).format_map(slots)
            say("agent", pick(rnd, wraps[tone]).format(fato=fact, Fato=capitalise(fact)), (60, 600))
            if rnd.random() < 0.8:
                say("customer", pick(rnd, CUSTOMER_THANKS if c.resolved else CUSTOMER_UNHAPPY), (15, 180))
            say("agent", pick(rnd, AGENT_CLOSERS[tone]).format_map(slots), (5, 60))
        duration = t
        # keep the conversation inside its day: it is one record arriving on one date
        c.start = max(c.start - max(0, c.start + duration - (day_end - 1)), day_end - DAY)
        c.turns = [Turn(c.start + offset, author, text) for offset, author, text in turns]
        c.handoff_at = None if handoff is None else c.start + handoff
        c.end = c.start + duration
