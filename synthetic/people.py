"""The people of one chunk: who they are, how they can be reached, and who shares what with whom."""
from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

import numpy as np
from faker import Faker

from atende.synthetic.catalogue import CITIES, PERSONAS, SOCIAL_PLATFORMS, City, Persona
from atende.synthetic.ids import IdFactory, base62, derive_seed, permute
from atende.synthetic.messy import slug, whatsapp_profile_name

NOT_IN_CRM = -2
BEFORE_WINDOW = -1

_HOUSEHOLD_SIZES = ((1, 0.55), (2, 0.27), (3, 0.12), (4, 0.06))
_MAIL_DOMAINS = (("gmail.com", 0.5), ("hotmail.com", 0.18), ("outlook.com", 0.08), ("yahoo.com.br", 0.07),
                 ("uol.com.br", 0.04), ("bol.com.br", 0.04), ("terra.com.br", 0.02), ("icloud.com", 0.05),
                 ("live.com", 0.02))
_COMPANY_SUFFIXES = ("", "adv", "eng", "consultoria", "group", "tech")


@dataclass(slots=True)
class Person:
    person_id: str
    index: int                       # global 0-based index, the key of every derived identifier
    persona: Persona
    preferred_tone: str
    favourite_categories: tuple[str, ...]
    gender: str
    first_name: str
    full_name: str
    birth_date: date
    city: City
    income_band: str
    profession: str
    household: int
    emails: list[str] = field(default_factory=list)        # canonical (lower-case) addresses
    own_mobile: str | None = None                           # national digits: DDD + 9 digits
    phones: list[str] = field(default_factory=list)         # every number they use, shared ones too
    whatsapp_phone: str | None = None                       # the phone their WhatsApp runs on
    devices: list[str] = field(default_factory=list)
    handles: dict[str, str | None] = field(default_factory=dict)
    crm_ids: list[str] = field(default_factory=list)
    crm_since: int = NOT_IN_CRM                             # day index of CRM registration
    marketing_consent: bool = False
    activity: float = 1.0                                   # multiplies the persona's contact rate
    sat_offset: float = 0.0

    @property
    def last_name(self) -> str:
        return self.full_name.split()[-1]

    def crm_id_on(self, day: int) -> str | None:
        """The CRM id a system could know on `day` (None before registration or if never registered)."""
        if self.crm_since == NOT_IN_CRM or day < self.crm_since:
            return None
        return self.crm_ids[0]


@dataclass(frozen=True)
class PhoneBook:
    """Facts about phone numbers that belong to the line, not to whoever uses it."""
    whatsapp_old: dict[str, bool]    # wa_id without the ninth digit (account older than the 2016 migration)
    whatsapp_name: dict[str, str]    # push name set by the line's owner


def _weighted(rnd: random.Random, pairs) -> str:
    total = sum(w for _, w in pairs)
    r = rnd.random() * total
    for value, weight in pairs:
        r -= weight
        if r < 0:
            return value
    return pairs[-1][0]


def _gendered(text: str, gender: str) -> str:
    """'Advogado(a)' -> Advogada / Advogado; 'Professor(a)' -> Professora / Professor."""
    text = re.sub(r"o\(a\)", "a" if gender == "F" else "o", text)
    return text.replace("(a)", "a" if gender == "F" else "")


def _sample_without_replacement(rnd: random.Random, weights: dict[str, float], k: int) -> tuple[str, ...]:
    pool = dict(weights)
    chosen = []
    for _ in range(min(k, len(pool))):
        value = _weighted(rnd, tuple(pool.items()))
        chosen.append(value)
        del pool[value]
    return tuple(chosen)


class PeopleBuilder:
    def __init__(self, *, chunk: int, first_index: int, total_customers: int, seed: int, start: date,
                 days: int, faker: Faker, ids: IdFactory) -> None:
        self.chunk = chunk
        self.first_index = first_index
        self.start = start
        self.days = days
        self.faker = faker
        self.ids = ids
        self.rnd = random.Random(derive_seed(seed, chunk, 11))
        self.np = np.random.default_rng([seed, chunk, 12])
        # e-mail and handle suffixes are permutations of the person index; the modulus only grows with N
        self.suffix_modulus = 10 ** max(4, len(str(16 * total_customers)))
        self.salt = derive_seed(seed, 0x5A17) % (1 << 40)
        self.city_weights = np.array([c.weight for c in CITIES], dtype=float)
        self.city_weights /= self.city_weights.sum()

    # ------------------------------------------------------------ identifiers
    def _suffix(self, index: int, slot: int) -> str:
        return str(permute(index * 16 + slot, self.suffix_modulus, self.salt))

    def _mobile(self, ddd: str, index: int, slot: int) -> str:
        # 9 + [6-9] + 7 digits is a valid Brazilian mobile; 4e7 numbers per area code, unique per (index, slot)
        sub = permute(index * 2 + slot, 40_000_000, self.salt)
        return f"{ddd}9{6 + sub // 10_000_000}{sub % 10_000_000:07d}"

    def _landline(self, ddd: str, household_key: int) -> str:
        sub = permute(household_key, 40_000_000, self.salt ^ 0x1A)
        return f"{ddd}{2 + sub // 10_000_000}{sub % 10_000_000:07d}"

    def _email(self, first: str, last: str, index: int, slot: int, domain: str) -> str:
        f, ln = slug(first.split()[0]), slug(last)
        u = self._suffix(index, slot)
        pattern = self.rnd.randrange(5)
        local = (f"{f}.{ln}{u}", f"{f}{ln}{u}", f"{f}_{u}", f"{f[0]}{ln}{u}", f"{f}.{ln}.{u}")[pattern]
        return f"{local}@{domain}"

    def _handle(self, platform: str, first: str, last: str, index: int) -> str | None:
        slot = 2 + SOCIAL_PLATFORMS.index(platform)
        f, ln = slug(first.split()[0]), slug(last)
        if platform in ("messenger", "facebook"):
            # page-scoped numeric ids, different for each surface of the same person
            return str(10 ** 15 + permute(index * 16 + slot, 9 * 10 ** 15, self.salt))
        if platform == "telegram" and self.rnd.random() < 0.3:
            return None  # many Telegram users never set a username
        u = self._suffix(index, slot)
        if platform == "linkedin":
            return f"{f}-{ln}-{base62(int(u), 6).lower()}"
        style = self.rnd.randrange(4)
        handle = (f"{f}.{ln}{u}", f"{f}{ln}_{u}", f"{f}_{u}", f"{ln}{f}{u}")[style]
        return "@" + handle if platform in ("instagram", "twitter") else handle

    # ------------------------------------------------------------ people
    def build(self, count: int) -> tuple[list[Person], PhoneBook]:
        personas = self.np.choice(len(PERSONAS), size=count, p=np.array([p.share for p in PERSONAS]))
        households: list[list[int]] = []
        i = 0
        while i < count:
            size = min(int(_weighted(self.rnd, tuple((str(s), w) for s, w in _HOUSEHOLD_SIZES))), count - i)
            households.append(list(range(i, i + size)))
            i += size
        city_idx = self.np.choice(len(CITIES), size=len(households), p=self.city_weights)
        people: list[Person] = []
        phonebook = PhoneBook(whatsapp_old={}, whatsapp_name={})
        for h, members in enumerate(households):
            city = CITIES[int(city_idx[h])]
            family_name = self.faker.last_name()
            household_key = self.first_index + members[0]  # the first member's index: unique per household
            group = [self._person(self.first_index + m, PERSONAS[int(personas[m])], city, family_name, h)
                     for m in members]
            self._share_within_household(group, city, household_key)
            for person in group:
                self._register_whatsapp(person, phonebook)
            people.extend(group)
        return people, phonebook

    def _person(self, index: int, persona: Persona, city: City, family_name: str, household: int) -> Person:
        rnd, fake = self.rnd, self.faker
        gender = "F" if rnd.random() < 0.52 else "M"
        first = fake.first_name_female() if gender == "F" else fake.first_name_male()
        if rnd.random() < 0.12 and " " not in first:
            first += " " + (fake.first_name_female() if gender == "F" else fake.first_name_male()).split()[0]
        maternal = fake.last_name() if rnd.random() < 0.6 else ""
        full_name = " ".join(part for part in (first, maternal, family_name) if part)
        mean, sd, low, high = persona.age
        age = int(min(high, max(low, round(self.np.normal(mean, sd)))))
        birth = self.start - timedelta(days=age * 365 + rnd.randrange(365))
        professions = persona.professions
        profession = _gendered(professions[rnd.randrange(len(professions))], gender) if rnd.random() < 0.8 \
            else fake.job()
        person = Person(
            person_id=f"p-{index + 1:07d}", index=index, persona=persona,
            preferred_tone=_weighted(rnd, tuple(persona.tones.items())),
            favourite_categories=_sample_without_replacement(rnd, dict(persona.categories), 2 + (rnd.random() < 0.5)),
            gender=gender, first_name=first.split()[0], full_name=full_name, birth_date=birth, city=city,
            income_band=_weighted(rnd, tuple(persona.income.items())), profession=profession, household=household,
        )
        if rnd.random() < persona.email_share:
            last = family_name.split()[-1]
            person.emails.append(self._email(first, last, index, 0, _weighted(rnd, _MAIL_DOMAINS)))
            if rnd.random() < 0.2:
                if persona.key in ("busy_professional", "premium_loyal"):
                    company = slug(fake.last_name()) + _COMPANY_SUFFIXES[rnd.randrange(len(_COMPANY_SUFFIXES))]
                    domain = f"{company}.com.br"
                else:
                    domain = _weighted(rnd, _MAIL_DOMAINS)
                person.emails.append(self._email(first, last, index, 1, domain))
        own_mobile_share = 0.85 if persona.key == "senior_traditional" else 0.97
        if rnd.random() < own_mobile_share:
            person.own_mobile = self._mobile(city.ddd, index, 0)
            person.phones.append(person.own_mobile)
            if persona.key == "busy_professional" and rnd.random() < 0.1:
                person.phones.append(self._mobile(city.ddd, index, 1))  # work phone
        person.devices.append(self.ids.device_id())
        if rnd.random() < 0.35:
            person.devices.append(self.ids.device_id())
        last = family_name.split()[-1]
        for platform in SOCIAL_PLATFORMS:
            if persona.channels.get(platform, 0) > 0 or rnd.random() < 0.05:
                person.handles[platform] = self._handle(platform, first, last, index)
        if rnd.random() < persona.crm_share:
            person.crm_since = BEFORE_WINDOW if (rnd.random() < 0.95 or self.days < 2) else rnd.randrange(1, self.days)
            person.crm_ids.append(self.ids.crm_id())
            if rnd.random() < 0.02:
                person.crm_ids.append(self.ids.crm_id())  # registered twice, a classic CRM duplicate
        person.marketing_consent = rnd.random() < 0.6
        person.activity = 0.0 if rnd.random() < persona.never_contacts else float(self.np.lognormal(-0.125, 0.5))
        person.sat_offset = float(self.np.normal(0.0, 0.07))
        return person

    def _share_within_household(self, group: list[Person], city: City, household_key: int) -> None:
        rnd = self.rnd
        if len(group) > 1 or any(p.persona.key == "senior_traditional" for p in group):
            has_senior = any(p.persona.key == "senior_traditional" for p in group)
            if rnd.random() < (0.6 if has_senior else 0.3):
                landline = self._landline(city.ddd, household_key)
                for person in group:
                    person.phones.append(landline)
        if len(group) < 2:
            return
        owners = [p.own_mobile for p in group if p.own_mobile]
        for person in group:
            if person.own_mobile is None and owners:
                # the family phone: someone without a mobile uses a relative's
                person.phones.insert(0, owners[rnd.randrange(len(owners))])
        if rnd.random() < 0.4:
            a, b = rnd.sample(range(len(group)), 2)
            tablet = self.ids.device_id()
            group[a].devices.append(tablet)
            group[b].devices.append(tablet)
        if rnd.random() < 0.08:
            a, b = rnd.sample(range(len(group)), 2)
            family = slug(group[a].last_name)
            shared = f"familia.{family}{self._suffix(group[a].index, 15)}@gmail.com"
            group[a].emails.append(shared)
            group[b].emails.append(shared)

    def _register_whatsapp(self, person: Person, phonebook: PhoneBook) -> None:
        mobiles = [p for p in person.phones if len(p) == 11]
        if not mobiles:
            return
        phone = mobiles[0]
        person.whatsapp_phone = phone
        if phone == person.own_mobile:
            phonebook.whatsapp_old[phone] = self.rnd.random() < person.persona.old_whatsapp_share
            first, last = person.first_name, person.last_name
            phonebook.whatsapp_name[phone] = whatsapp_profile_name(first, last, self.rnd)
