"""Surveys, CRM master data, orders and outbound actions of one person."""
from __future__ import annotations

import random
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import MappingProxyType

import numpy as np

from atende.synthetic.catalogue import ACTION_CHANNELS, ACTIONS, CATEGORIES, CITIES, Product
from atende.synthetic.channels import business_hours
from atende.synthetic.contacts import Contact
from atende.synthetic.ids import IdFactory
from atende.synthetic.messy import format_phone, messy_email, name_typo
from atende.synthetic.output import BRT, DAY, ChunkOutput, iso_local, iso_utc
from atende.synthetic.people import BEFORE_WINDOW, NOT_IN_CRM, Person
from atende.synthetic.texts import (
    SURVEY_COMMENTS_BAD,
    SURVEY_COMMENTS_GOOD,
    SURVEY_COMMENTS_NEUTRAL,
    SURVEY_COMMENTS_TONE,
    SURVEY_COMMENTS_TONE_MATCH,
    pick,
)

# which survey a contact system sends after each kind of channel
_SURVEY_KINDS: Mapping[str, tuple[tuple[str, ...], tuple[float, ...]]] = MappingProxyType({
    "voice": (("nps", "csat", "ces"), (0.4, 0.8, 1.0)),
    "digital": (("csat", "nps", "ces", "sps"), (0.45, 0.7, 0.9, 1.0)),
    "email": (("csat", "nps", "sps"), (0.5, 0.85, 1.0)),
})
# how likely an order placed on each channel carries the CRM id / an e-mail
_ORDER_IDS: Mapping[str, tuple[float, float]] = MappingProxyType({
    "app": (0.95, 0.5), "web": (0.85, 0.7), "store": (0.5, 0.2), "phone": (0.7, 0.3), "marketplace": (0.1, 0.3),
})
_BASE_POLICY = MappingProxyType({
    "whatsapp_followup": 0.08, "product_offer": 0.32, "satisfaction_survey": 0.12, "kb_article": 0.1,
    "escalate_to_human": 0.03, "retention_call": 0.05, "no_action": 0.3,
})


def survey_score(kind: str, satisfaction: float, rng: np.random.Generator) -> int:
    noise = float(rng.normal())
    if kind == "nps":
        return int(min(10, max(0, round(2 + 9 * satisfaction + 0.9 * noise))))
    if kind == "csat":
        return int(min(5, max(1, round(1 + 4.4 * satisfaction + 0.5 * noise))))
    if kind == "ces":  # 1 = very low effort: the happier, the lower
        return int(min(7, max(1, round(7 - 6.5 * satisfaction + 0.6 * noise))))
    return int(min(5, max(0, round(5.5 * satisfaction + 0.5 * noise))))  # sps


class CommerceWriter:
    def __init__(self, *, out: ChunkOutput, ids: IdFactory, rnd: random.Random, rng: np.random.Generator,
                 products_by_category: Mapping[str, Sequence[Product]], days: int) -> None:
        self.out = out
        self.ids = ids
        self.rnd = rnd
        self.rng = rng
        self.days = days
        # only products on sale can be ordered; sorted by price so price level picks an end of the range
        self.products_by_category = {cat: sorted((p for p in items if p.active), key=lambda p: p.price)
                                     for cat, items in products_by_category.items()}

    # ------------------------------------------------------------------ surveys/
    def survey_after(self, c: Contact) -> None:
        rnd, person = self.rnd, c.person
        if c.disposition in ("abandoned", "voicemail") or c.end == 0:
            return
        rate = person.persona.survey_rate * (0.6 if c.bot_only else 1.0)
        if rnd.random() >= rate:
            return
        family = "voice" if c.channel == "voice" else "email" if c.channel == "email" else "digital"
        kinds, cum = _SURVEY_KINDS[family]
        kind = kinds[bisect_left(cum, rnd.random() * cum[-1])]
        if c.channel == "voice":
            delay = rnd.randrange(10, 120)  # the IVR asks right after the call
        elif rnd.random() < 0.7:
            delay = rnd.randrange(30, 3600)
        else:
            delay = rnd.randrange(3 * 3600, 30 * 3600)
        submitted = c.end + delay
        day = self.out.day_of(submitted)
        if day is None:
            return
        contact_id = c.record_id if (c.record_id and rnd.random() < 0.88) else None
        email = c.email_used if c.channel == "email" else (
            person.emails[0] if person.emails and rnd.random() < 0.35 else None)
        phone = c.phone_used if (c.phone_used and rnd.random() < 0.6) else None
        self._survey(person, submitted, kind, survey_score(kind, c.satisfaction, self.rng), contact_id, email, phone,
                     day, self._comment(c), )

    def relationship_nps(self, person: Person) -> None:
        """The quarterly NPS campaign: not about any contact, sent to CRM customers by e-mail."""
        rnd = self.rnd
        if person.crm_since == NOT_IN_CRM or not person.emails or rnd.random() >= 0.05 * self.days / 30:
            return
        day = rnd.randrange(self.days)
        submitted = self.out.day_start(day) + rnd.randrange(8 * 3600, 22 * 3600)
        satisfaction = min(1.0, max(0.0, person.persona.satisfaction + person.sat_offset + 0.05))
        score = survey_score("nps", satisfaction, self.rng)
        comment = pick(rnd, SURVEY_COMMENTS_GOOD if score >= 9 else SURVEY_COMMENTS_BAD if score <= 6 else
                       SURVEY_COMMENTS_NEUTRAL) if rnd.random() < 0.25 else None
        self._survey(person, submitted, "nps", score, None, person.emails[0], None, day, comment)

    def _survey(self, person: Person, submitted: int, kind: str, score: int, contact_id: str | None,
                email: str | None, phone: str | None, day: int, comment: str | None) -> None:
        rnd = self.rnd
        crm_id = person.crm_id_on(day) if rnd.random() < 0.5 else None
        response_id = self.ids.response_id()
        fields = (response_id, iso_utc(submitted), kind, score, contact_id,
                  messy_email(email, rnd) if email else None, format_phone(phone, rnd) if phone else None,
                  crm_id, comment)
        self.out.add_row("surveys", submitted, fields, response_id, person.person_id)

    def _comment(self, c: Contact) -> str | None:
        rnd = self.rnd
        if rnd.random() >= 0.3:
            return None
        if c.tone is not None and rnd.random() < 0.5:
            return pick(rnd, (SURVEY_COMMENTS_TONE_MATCH if c.tone_matched else SURVEY_COMMENTS_TONE)[c.tone])
        s = c.satisfaction
        return pick(rnd, SURVEY_COMMENTS_GOOD if s > 0.66 else SURVEY_COMMENTS_BAD if s < 0.42 else
                    SURVEY_COMMENTS_NEUTRAL)

    # ------------------------------------------------------------------ crm/
    def crm(self, person: Person) -> None:
        if person.crm_since == NOT_IN_CRM:
            return
        rnd, out = self.rnd, self.out
        for n, crm_id in enumerate(person.crm_ids):
            if person.crm_since == BEFORE_WINDOW:
                # the initial load arrives on the first day; its rows carry their historical timestamps
                arrival = out.day_start(0) + rnd.randrange(2 * 3600, 6 * 3600)
                updated = out.day_start(0) - rnd.randrange(DAY, 1500 * DAY)
            else:
                arrival = updated = out.day_start(person.crm_since) + rnd.randrange(8 * 3600, 21 * 3600)
            # a duplicate registration often carries another address or none
            email = person.emails[min(n, len(person.emails) - 1)] if person.emails and rnd.random() < 0.9 else None
            phone = person.phones[0] if person.phones and rnd.random() < 0.92 else None
            consent_at = updated - rnd.randrange(0, 400 * DAY) if rnd.random() < 0.85 else None
            name = person.full_name
            if rnd.random() < 0.06:
                name = name_typo(name, rnd)
            elif rnd.random() < 0.12:
                name = name.upper()  # legacy screens stored names in capitals
            fields = [
                crm_id, name, messy_email(email, rnd) if email else None,
                format_phone(phone, rnd) if phone else None,
                person.birth_date.isoformat() if rnd.random() < 0.92 else None,
                person.gender if rnd.random() < 0.95 else None,
                person.city.name, person.city.state, "BR" if rnd.random() < 0.97 else "Brasil",
                person.income_band if rnd.random() < 0.75 else None,
                person.profession if rnd.random() < 0.8 else None,
                ("true" if person.marketing_consent else "false") if consent_at is not None else None,
                iso_local(consent_at) if consent_at is not None else None,
                iso_local(updated),
            ]
            out.add_row("crm", arrival, fields, crm_id, person.person_id)
            if n == 0 and self.days > 1 and rnd.random() < 0.1:
                self._crm_update(person, fields, arrival)

    def _crm_update(self, person: Person, fields: list, created: int) -> None:
        """A later row for the same customer: the latest updated_at wins downstream."""
        rnd, out = self.rnd, self.out
        first_day = (out.day_of(created) or 0) + 1
        if first_day >= self.days:
            return
        ts = out.day_start(rnd.randrange(first_day, self.days)) + rnd.randrange(8 * 3600, 20 * 3600)
        row = list(fields)
        kind = rnd.random()
        if kind < 0.3 and len(person.emails) > 1:
            row[2] = person.emails[1]
        elif kind < 0.6:
            person.marketing_consent = not person.marketing_consent
            row[11] = "true" if person.marketing_consent else "false"
            row[12] = iso_local(ts)
        elif kind < 0.75 and len(person.phones) > 1:
            row[3] = format_phone(person.phones[1], rnd)
        elif kind < 0.85:
            same_state = [c for c in CITIES if c.state == person.city.state and c != person.city] or list(CITIES)
            moved = same_state[rnd.randrange(len(same_state))]
            row[6], row[7] = moved.name, moved.state
        else:
            row[1] = person.full_name  # the typo corrected
        row[13] = iso_local(ts)
        out.add_row("crm", ts, row, None, None)

    # ------------------------------------------------------------------ orders/
    def _product(self, person: Person) -> Product:
        rnd = self.rnd
        category = person.favourite_categories[rnd.randrange(len(person.favourite_categories))] \
            if rnd.random() < 0.7 else CATEGORIES[rnd.randrange(len(CATEGORIES))]
        items = self.products_by_category[category]
        # price level skews the pick towards the cheap or the dear end of the category
        level = person.persona.price_level
        position = float(self.rng.beta(1 + 4 * level, 1 + 4 * (1 - level)))
        return items[min(len(items) - 1, int(position * len(items)))]

    def orders(self, person: Person) -> None:
        persona = person.persona
        count = int(self.rng.poisson(persona.orders_per_month * self.days / 30 * (0.4 + 0.6 * person.activity)))
        channels, weights = tuple(persona.order_channels), tuple(persona.order_channels.values())
        for _ in range(count):
            day = self.rnd.randrange(self.days)
            ts = self.out.day_start(day) + self.rnd.randrange(7 * 3600, 24 * 3600)
            self.order(person, ts, self._product(person), self.rnd.choices(channels, weights)[0])

    def order(self, person: Person, ts: int, product: Product, channel: str) -> float:
        """Write one order; returns its value (0 when it falls outside the window)."""
        rnd = self.rnd
        day = self.out.day_of(ts)
        if day is None:
            return 0.0
        quantity = 1 if rnd.random() < 0.82 else 2 if rnd.random() < 0.8 else rnd.randrange(3, 6)
        price = product.price * (1 - rnd.choice((0.05, 0.1, 0.15))) if rnd.random() < 0.12 else product.price
        p_crm, p_email = _ORDER_IDS[channel]
        email = person.emails[0] if person.emails and rnd.random() < p_email else None
        order_id = self.ids.order_id()
        # the order system writes milliseconds
        ordered_at = datetime.fromtimestamp(ts, BRT).replace(microsecond=rnd.randrange(1000) * 1000)
        fields = (order_id, ordered_at.isoformat(timespec="milliseconds"),
                  person.crm_id_on(day) if rnd.random() < p_crm else None,
                  messy_email(email, rnd) if email else None, product.product_id, quantity, f"{price:.2f}", channel)
        self.out.add_row("orders", ts, fields, order_id, person.person_id)
        return round(quantity * price, 2)

    # ------------------------------------------------------------------ actions/
    def actions(self, person: Person, contacts: Sequence[Contact]) -> None:
        rnd = self.rnd
        moments: list[tuple[int, Contact | None]] = []
        count = int(self.rng.poisson(person.persona.actions_per_month * self.days / 30))
        for _ in range(count):
            day = rnd.randrange(self.days)
            moments.append((self.out.day_start(day) + rnd.randrange(9 * 3600, 20 * 3600), None))
        for c in contacts:
            # service follow-ups triggered by a contact
            trigger = 0.35 if not c.resolved else 0.1
            if c.topic in ("cancellation", "complaint"):
                trigger += 0.3
            if c.end and rnd.random() < trigger:
                moments.append((business_hours(c.end + rnd.randrange(1800, 20 * 3600), rnd), c))
        moments.sort(key=lambda m: m[0])
        by_end = sorted((c for c in contacts if c.end), key=lambda c: c.end)
        ends = [c.end for c in by_end]
        for ts, trigger_contact in moments:
            recent = trigger_contact
            if recent is None:
                i = bisect_left(ends, ts) - 1
                recent = by_end[i] if i >= 0 and ts - by_end[i].end < 7 * DAY else None
            self._action(person, ts, recent)

    def _action(self, person: Person, ts: int, recent: Contact | None) -> None:
        rnd, out = self.rnd, self.out
        day = out.day_of(ts)
        if day is None:
            return
        # the deciding system's policy sees recent service history, not the persona
        weights = dict(_BASE_POLICY)
        if recent is not None:
            if not recent.resolved:
                weights["whatsapp_followup"] += 0.3
                weights["escalate_to_human"] += 0.15
            else:
                weights["satisfaction_survey"] += 0.2
            if recent.topic in ("cancellation", "complaint"):
                weights["retention_call"] += 0.35
                weights["escalate_to_human"] += 0.1
                weights["product_offer"] *= 0.3
        if person.whatsapp_phone is None:
            weights["whatsapp_followup"] = 0.0
        total = sum(weights.values())
        action = rnd.choices(ACTIONS, [weights[a] for a in ACTIONS])[0]
        propensity = f"{weights[action] / total:.4f}" if rnd.random() < 0.92 else None
        channel = self._action_channel(person, action)
        respond_p, convert_p = person.persona.action_response[action]
        if recent is not None and not recent.resolved and action in ("whatsapp_followup", "escalate_to_human"):
            respond_p = min(0.95, respond_p * 1.3)
        responded = rnd.random() < respond_p if action != "no_action" else False
        converted = (responded and rnd.random() < convert_p) if action != "no_action" else rnd.random() < convert_p
        revenue = None
        if converted and action in ("product_offer", "no_action"):
            # an offer that converts is an order a day or two later (organic purchases for the control group)
            order_ts = ts + rnd.randrange(600, 2 * DAY)
            value = self.order(person, order_ts, self._product(person), rnd.choice(("app", "web")))
            revenue = f"{value:.2f}" if value else None
        elif converted and action == "retention_call":
            revenue = f"{rnd.choice((49.9, 79.9, 99.9, 149.9)) * 6:.2f}"  # six months kept
        elif converted:
            revenue = "0.00"
        phone = None
        if channel in ("whatsapp", "sms", "voice"):
            line = person.whatsapp_phone if channel == "whatsapp" else (person.own_mobile or
                                                                        (person.phones[0] if person.phones else None))
            phone = format_phone(line, rnd) if line else None
        email = person.emails[0] if person.emails and (channel == "email" or rnd.random() < 0.2) else None
        crm_id = person.crm_id_on(day) if rnd.random() < 0.9 else None
        action_id = self.ids.action_id()
        fields = (action_id, iso_local(ts), action, channel, crm_id, messy_email(email, rnd) if email else None,
                  phone, propensity, "true" if responded else "false", "true" if converted else "false", revenue)
        out.add_row("actions", ts, fields, action_id, person.person_id)

    def _action_channel(self, person: Person, action: str) -> str | None:
        options = [(ch, w) for ch, w in ACTION_CHANNELS[action] if
                   (ch != "email" or person.emails) and (ch != "whatsapp" or person.whatsapp_phone)
                   and (ch not in ("voice", "sms") or person.phones)]
        if not options:
            return None if action == "no_action" else ("push" if action in ("product_offer", "kb_article") else "sms")
        return self.rnd.choices([ch for ch, _ in options], [w for _, w in options])[0]
