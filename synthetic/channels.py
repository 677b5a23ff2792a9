"""Contacts rendered as each system logs them: conversation JSON, WhatsApp webhooks, e-mail, call records."""
from __future__ import annotations

import html
import json
import random
from collections.abc import Mapping
from datetime import datetime
from email.charset import BASE64, QP, Charset
from email.generator import BytesGenerator
from email.header import Header
from email.message import Message
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.policy import compat32
from email.utils import format_datetime, formataddr
from io import BytesIO
from types import MappingProxyType
from typing import Any

from atende.synthetic.catalogue import CALL_QUEUES, CONVERSATION_PREFIX
from atende.synthetic.contacts import Contact, ContactPlanner
from atende.synthetic.ids import IdFactory, base62
from atende.synthetic.messy import format_ani, format_phone, messy_email, name_typo
from atende.synthetic.output import BRT, DAY, ChunkOutput, iso_local
from atende.synthetic.people import Person, PhoneBook
from atende.synthetic.texts import (
    AGENT_CLOSERS,
    AGENT_SIGNATURES,
    AUTO_ACK,
    CUSTOMER_DETAILS,
    CUSTOMER_OPENERS,
    EMAIL_AGENT_OPENERS,
    EMAIL_CUSTOMER_GREETINGS,
    EMAIL_CUSTOMER_REPLIES_BAD,
    EMAIL_CUSTOMER_REPLIES_OK,
    EMAIL_CUSTOMER_SIGNOFFS,
    EMAIL_MOBILE_FOOTERS,
    EMAIL_SUBJECTS,
    FACTS_PENDING,
    FACTS_RESOLVED,
    MONTHS,
    MONTHS_SHORT,
    WEEKDAYS_SHORT,
    WRAP_PENDING,
    WRAP_RESOLVED,
    capitalise,
    pick,
)

# The company's WhatsApp Business account and line, as Meta identifies them.
WABA_ID = "102290129340398"
PHONE_NUMBER_ID = "106540352242922"
DISPLAY_PHONE_NUMBER = "551140040000"
SUPPORT_ADDRESS = "atendimento@atende.com.br"
NOREPLY_ADDRESS = "noreply@atende.com.br"
COMPANY_DOMAIN = "atende.com.br"

# chance a channel shows each identifier: crm_id, email, phone, name, device_id
_SEEN: Mapping[str, tuple[float, float, float, float, float]] = MappingProxyType({
    "webchat": (0.2, 0.55, 0.3, 0.85, 0.75),
    "chatbot": (0.1, 0.3, 0.35, 0.5, 0.8),
    "app": (0.9, 0.35, 0.2, 0.7, 1.0),
    "telegram": (0.0, 0.0, 0.15, 0.95, 0.0),
    "messenger": (0.0, 0.05, 0.02, 0.95, 0.0),
    "instagram": (0.0, 0.03, 0.02, 0.4, 0.0),
    "facebook": (0.0, 0.03, 0.02, 0.95, 0.0),
    "twitter": (0.0, 0.02, 0.01, 0.6, 0.0),
    "linkedin": (0.0, 0.05, 0.0, 0.98, 0.0),
})
_WEEKDAYS_LONG = ("segunda-feira", "terça-feira", "quarta-feira", "quinta-feira", "sexta-feira", "sábado", "domingo")
_MAILERS = ("Microsoft Outlook 16.0", "Apple Mail (2.3774)", "Mozilla Thunderbird 128.5", None, None, None)


def wa_id_for(phone: str, old: bool) -> str:
    """WhatsApp ids are country code + number; accounts from before the ninth-digit change keep 8 digits."""
    return "55" + (phone[:2] + phone[3:] if old and len(phone) == 11 else phone)


def business_hours(ts: int, rnd: random.Random) -> int:
    """Agents and campaigns work 8h-20h: later moments slip to the next morning."""
    hour = datetime.fromtimestamp(ts, BRT).hour
    if 8 <= hour < 20:
        return ts
    midnight = ts - (ts - 3 * 3600) % DAY  # local midnight of ts (UTC-3)
    morning = midnight + 8 * 3600 + (DAY if hour >= 20 else 0)
    return morning + rnd.randrange(0, 3 * 3600)


_POLICY_LF = compat32.clone(linesep="\n")
_POLICY_CRLF = compat32.clone(linesep="\r\n")


def _charset(body_encoding: int | None) -> Charset:
    charset = Charset("utf-8")
    # None: raw 8bit UTF-8 (email.charset's own table uses None so; typeshed types the attribute int only)
    charset.body_encoding = body_encoding  # type: ignore[assignment]
    return charset


# quoted-printable and base64 first: HTML parts draw from those two only
_CHARSETS = (_charset(QP), _charset(BASE64), _charset(QP), _charset(None))


class ChannelWriter:
    def __init__(self, *, out: ChunkOutput, ids: IdFactory, rnd: random.Random, phonebook: PhoneBook,
                 planner: ContactPlanner) -> None:
        self.out = out
        self.ids = ids
        self.rnd = rnd
        self.phonebook = phonebook
        self.planner = planner

    def render(self, c: Contact) -> None:
        if c.channel == "whatsapp":
            self.whatsapp(c)
        elif c.channel == "email":
            self.email_thread(c)
        elif c.channel == "voice":
            self.call(c)
        else:
            self.conversation(c)

    # ------------------------------------------------------------------ helpers
    def _day_end(self, ts: int) -> int:
        day = self.out.day_of(ts)
        return self.out.day_start(day if day is not None else self.out.days - 1) + DAY

    def _display_name(self, person: Person, p_typo: float = 0.08) -> str:
        rnd = self.rnd
        name = person.full_name if rnd.random() < 0.6 else f"{person.first_name} {person.last_name}"
        return name_typo(name, rnd) if rnd.random() < p_typo else name

    def _pick_phone(self, person: Person) -> str | None:
        if not person.phones:
            return None
        if person.own_mobile and self.rnd.random() < 0.8:
            return person.own_mobile
        return person.phones[self.rnd.randrange(len(person.phones))]

    def _pick_email(self, person: Person) -> str | None:
        if not person.emails:
            return None
        return person.emails[0] if self.rnd.random() < 0.75 else person.emails[self.rnd.randrange(len(person.emails))]

    def _pick_device(self, person: Person) -> str:
        # the household tablet, when there is one, is added last and used for a good share of sessions
        if len(person.devices) > 1 and self.rnd.random() < 0.5:
            return person.devices[-1]
        return person.devices[self.rnd.randrange(len(person.devices))]

    def _crm_id(self, person: Person, day: int) -> str | None:
        crm_id = person.crm_id_on(day)
        if crm_id is not None and len(person.crm_ids) > 1 and self.rnd.random() < 0.3:
            return person.crm_ids[1]
        return crm_id

    # ------------------------------------------------------------------ conversations/
    def conversation(self, c: Contact) -> None:
        rnd, person = self.rnd, c.person
        self.planner.dialogue(c, self._day_end(c.start))
        day = self.out.day_of(c.start) or 0
        p_crm, p_email, p_phone, p_name, p_device = _SEEN[c.channel]
        handle = None
        if c.channel in person.handles:
            handle = person.handles[c.channel]
            if handle is not None and c.channel in ("instagram", "twitter") and rnd.random() < 0.3:
                # platforms and exports disagree on the leading @ and on case
                handle = handle.lstrip("@") if rnd.random() < 0.5 else handle.capitalize()
        email = self._pick_email(person) if rnd.random() < p_email else None
        phone = self._pick_phone(person) if rnd.random() < p_phone else None
        customer = {
            "crm_id": self._crm_id(person, day) if rnd.random() < p_crm else None,
            "email": messy_email(email, rnd) if email else None,
            "phone": format_phone(phone, rnd) if phone else None,
            "name": self._display_name(person) if rnd.random() < p_name else None,
            "handle": handle,
            "device_id": self._pick_device(person) if rnd.random() < p_device else None,
        }
        conversation_id = self.ids.conversation_id(CONVERSATION_PREFIX[c.channel])
        c.record_id = conversation_id
        c.email_used = email
        agent_id = c.agent.agent_id if c.agent else None
        record: dict[str, object] = {
            "conversation_id": conversation_id,
            "channel": c.channel,
            "started_at": iso_local(c.start),
            "ended_at": iso_local(c.end),
            "customer": customer,
            "messages": [
                {"sent_at": iso_local(t.ts), "author": t.author, "agent_id": agent_id if t.author == "agent" else None,
                 "text": t.text}
                for t in c.turns
            ],
            "handoff_at": iso_local(c.handoff_at) if c.handoff_at is not None else None,
            "resolved": c.resolved if rnd.random() > 0.03 else None,
            "topic": c.topic if rnd.random() > 0.04 else None,
            "language": "pt",
        }
        # fields the contract does not know: the pipeline must keep them, not fail on them
        if c.channel == "app":
            record["app_version"] = f"5.{rnd.randrange(8, 14)}.{rnd.randrange(0, 5)}"
        elif c.channel == "webchat" and rnd.random() < 0.5:
            record["page_url"] = rnd.choice(("https://atende.com.br/ajuda", "https://atende.com.br/minha-conta/pedidos",
                                             "https://atende.com.br/checkout"))
        line = json.dumps(record, ensure_ascii=False)
        self.out.add_json("conversations", c.end, line, (conversation_id,), person.person_id)

    # ------------------------------------------------------------------ whatsapp/
    def _envelope(self, value: dict) -> str:
        payload = {
            "object": "whatsapp_business_account",
            "entry": [{"id": WABA_ID, "changes": [{"value": value, "field": "messages"}]}],
        }
        return json.dumps(payload, separators=(",", ":"))

    def _metadata(self) -> dict[str, str]:
        return {"display_phone_number": DISPLAY_PHONE_NUMBER, "phone_number_id": PHONE_NUMBER_ID}

    def whatsapp(self, c: Contact) -> None:
        rnd, person = self.rnd, c.person
        phone = person.whatsapp_phone
        assert phone is not None
        self.planner.dialogue(c, self._day_end(c.start))
        c.phone_used = phone
        wa_id = wa_id_for(phone, self.phonebook.whatsapp_old.get(phone, False))
        profile = self.phonebook.whatsapp_name.get(phone, person.first_name)
        conversation_window = self.ids.wa_conversation_id()
        turns = c.turns
        i = 0
        while i < len(turns):
            turn = turns[i]
            if turn.author == "customer":
                batch = [turn]
                # webhooks sometimes carry two messages sent seconds apart
                while i + 1 < len(turns) and turns[i + 1].author == "customer" and \
                        turns[i + 1].ts - batch[-1].ts < 30 and rnd.random() < 0.4:
                    i += 1
                    batch.append(turns[i])
                messages: list[dict[str, Any]] = []
                for t in batch:
                    messages.append({"from": wa_id, "id": self.ids.wamid(wa_id), "timestamp": str(t.ts), "type": "text",
                                     "text": {"body": t.text}})
                value = {"messaging_product": "whatsapp", "metadata": self._metadata(),
                         "contacts": [{"profile": {"name": profile}, "wa_id": wa_id}], "messages": messages}
                self.out.add_json("whatsapp", batch[-1].ts, self._envelope(value), [m["id"] for m in messages],
                                  person.person_id)
            else:
                self._statuses(wa_id, turn.ts, conversation_window)
            i += 1

    def _statuses(self, wa_id: str, ts: int, conversation_window: str) -> None:
        """Delivery receipts of one business message: the only trace our replies leave in the webhook feed."""
        rnd = self.rnd
        message_id = self.ids.wamid(wa_id)
        conversation = {"id": conversation_window, "origin": {"type": "service"}}
        pricing = {"billable": True, "pricing_model": "CBP", "category": "service"}
        events = []
        if rnd.random() < 0.25:
            events.append(("sent", ts, True))
        if rnd.random() < 0.85:
            events.append(("delivered", ts + rnd.randrange(1, 6), True))
        if rnd.random() < 0.6:
            events.append(("read", ts + rnd.randrange(5, 300), False))
        for status, when, billing in events:
            entry: dict[str, object] = {"id": message_id, "status": status, "timestamp": str(when), "recipient_id": wa_id}
            if billing:
                entry["conversation"] = conversation
                entry["pricing"] = pricing
            value = {"messaging_product": "whatsapp", "metadata": self._metadata(), "statuses": [entry]}
            self.out.add_json("whatsapp", when, self._envelope(value), (), None)

    # ------------------------------------------------------------------ calls/
    def call(self, c: Contact) -> None:
        rnd, person, planner = self.rnd, c.person, self.planner
        phone = self._pick_phone(person)
        assert phone is not None  # voice contacts are planned only for people with a phone (contacts.can_use)
        if person.persona.key == "senior_traditional":
            landlines = [p for p in person.phones if len(p) == 10]
            if landlines and rnd.random() < 0.5:
                phone = landlines[0]
        r = rnd.random()
        via = "pstn" if r < 0.88 or person.whatsapp_phone is None else "whatsapp" if r < 0.97 else "telegram"
        ani: str | None
        if via == "whatsapp":
            phone = person.whatsapp_phone
            assert phone is not None  # via is whatsapp only for people with a WhatsApp phone
            ani = wa_id_for(phone, self.phonebook.whatsapp_old.get(phone, False))
        elif via == "telegram":
            ani = None if rnd.random() < 0.7 else format_ani(phone, rnd)
        else:
            ani = None if rnd.random() < 0.04 else format_ani(phone, rnd)  # withheld caller id
        c.phone_used = phone
        lognormal = planner.rng.lognormal
        answered = c.disposition in ("answered", "transferred")
        if c.disposition == "abandoned":
            wait, talk, hold = float(lognormal(5.0, 0.6)), 0.0, 0.0
        elif c.disposition == "voicemail":
            wait, talk, hold = float(rnd.randrange(30, 120)), float(rnd.randrange(15, 60)), 0.0
        else:
            wait = float(lognormal(4.1, 0.8))
            talk = float(lognormal(5.6 if c.disposition == "answered" else 4.6, 0.5))
            hold = float(lognormal(3.8, 0.6)) if rnd.random() < 0.4 else 0.0
        duration = int(wait + talk + hold) + 1
        day_end = self._day_end(c.start)
        c.start = max(min(c.start, day_end - 1 - duration), day_end - DAY)
        c.end = c.start + duration
        call_id = self.ids.call_id()
        c.record_id = call_id
        transfers = (1 if rnd.random() < 0.8 else 2) if c.disposition == "transferred" else \
            (1 if answered and rnd.random() < 0.08 else 0)
        topic = c.topic if (answered and rnd.random() > 0.05) or (not answered and rnd.random() < 0.5) else None
        fields = (
            call_id, iso_local(c.start), ani, CALL_QUEUES[c.topic], f"{wait:.0f}", f"{talk:.0f}", f"{hold:.0f}",
            c.agent.agent_id if (answered and c.agent) else None, c.disposition, transfers,
            "true" if (answered and c.resolved) else "false", topic, via,
        )
        self.out.add_row("calls", c.start, fields, call_id, person.person_id)

    # ------------------------------------------------------------------ email/
    def _message_id(self, address: str) -> str:
        """Message-IDs shaped like the sending provider's, unique by construction."""
        rnd = self.rnd
        token = self.ids.email_local()
        domain = address.rsplit("@", 1)[-1].lower()
        if domain == "gmail.com":
            return f"CA+{base62(int(token, 16), 11)}{token[:8].lower()}@mail.gmail.com"
        if domain in ("hotmail.com", "outlook.com", "live.com", "outlook.com.br"):
            server = f"CP6P152MB{rnd.randrange(1000, 9999)}"
            return f"{server}{token}@{server}.LAMP152.PROD.OUTLOOK.COM"
        if domain == "yahoo.com.br":
            return f"{int(token, 16)}.{rnd.randrange(10 ** 6)}@mail.yahoo.com"
        if domain == COMPANY_DOMAIN:
            return f"{token.lower()}.{rnd.randrange(10 ** 6):06d}@{COMPANY_DOMAIN}"
        return f"{token.lower()}@{domain}"

    def _build_email(self, *, sender: tuple[str, str], recipient: tuple[str, str], subject: str, ts: int,
                     message_id: str, parents: list[str], text: str, html_quote: str | None, mailer: str | None,
                     crlf: bool) -> bytes:
        # The email package's legacy (compat32) API: ten times faster than EmailMessage's header objects.
        rnd = self.rnd
        # a Charset as _charset: MIMEText passes it on to set_payload, which takes one (typeshed: str only)
        body: Message = MIMEText(text, "plain", _CHARSETS[rnd.randrange(len(_CHARSETS))])  # type: ignore[arg-type]
        if html_quote is not None:
            # fixed boundary: the email package would otherwise draw one from the global random state
            msg: Message = MIMEMultipart("alternative",
                                         boundary=f"000000000000{base62(int(self.ids.email_local(), 16), 11)}")
            msg.attach(body)
            html_part = MIMEText(html_quote, "html", _CHARSETS[rnd.randrange(2)])  # type: ignore[arg-type]  # as above
            msg.attach(html_part)
            for part in (body, html_part):  # the payload, in order
                del part["MIME-Version"]
        else:
            msg = body
        content_headers = [(k, v) for k, v in msg.items() if k in ("Content-Type", "MIME-Version",
                                                                   "Content-Transfer-Encoding")]
        for key, _ in content_headers:
            del msg[key]
        msg["From"] = formataddr(sender, charset="utf-8")
        msg["To"] = formataddr(recipient, charset="utf-8")
        # compat32 takes a Header as a header value (typeshed's Message[str, str] takes str only)
        msg["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")  # type: ignore[assignment]
        msg["Date"] = format_datetime(datetime.fromtimestamp(ts, BRT))
        msg["Message-ID"] = f"<{message_id}>"
        if parents:
            msg["In-Reply-To"] = f"<{parents[-1]}>"
            msg["References"] = " ".join(f"<{p}>" for p in parents)
        if mailer:
            msg["X-Mailer"] = mailer
        for key, value in content_headers:
            msg[key] = value
        buffer = BytesIO()
        # mangle_from_ escapes body lines starting with "From " so mbox readers do not split there
        BytesGenerator(buffer, mangle_from_=True, policy=_POLICY_CRLF if crlf else _POLICY_LF).flatten(msg)
        return buffer.getvalue()

    def _attribution(self, ts: int, name: str, address: str, style: str) -> str:
        when = datetime.fromtimestamp(ts, BRT)
        if style == "gmail":
            return (f"Em {WEEKDAYS_SHORT[when.weekday()]}, {when.day} de {MONTHS_SHORT[when.month - 1]} de {when.year} "
                    f"às {when:%H:%M}, {name} <{address}> escreveu:")
        return f"Em {when:%d/%m/%Y %H:%M}, {name} escreveu:"

    def _quote(self, text: str, ts: int, name: str, address: str, style: str) -> str:
        if style == "outlook":
            when = datetime.fromtimestamp(ts, BRT)
            header = (f"________________________________\nDe: {name} <{address}>\n"
                      f"Enviado: {_WEEKDAYS_LONG[when.weekday()]}, {when.day} de {MONTHS[when.month - 1]} de "
                      f"{when.year} {when:%H:%M}")
            return f"{header}\n\n{text}"
        quoted = "\n".join(("> " + line) if line else ">" for line in text.split("\n"))
        return f"{self._attribution(ts, name, address, style)}\n{quoted}"

    @staticmethod
    def _html(text: str, quote: str | None) -> str:
        body = "<br>\n".join(html.escape(line) for line in text.split("\n"))
        block = ""
        if quote:
            block = ('<div class="gmail_quote"><blockquote style="margin:0 0 0 .8ex;border-left:1px #ccc solid;'
                     'padding-left:1ex">' + "<br>\n".join(html.escape(line) for line in quote.split("\n"))
                     + "</blockquote></div>")
        return f'<html><body><div dir="ltr">{body}</div>{block}</body></html>\n'

    def email_thread(self, c: Contact) -> None:
        rnd, person, out = self.rnd, c.person, self.out
        address = self._pick_email(person)
        assert address is not None
        c.email_used = address
        slots = self.planner.slots(c)
        shown_address = address.upper() if rnd.random() < 0.05 else (
            ".".join(p.capitalize() for p in address.split("@")[0].split(".")) + "@" + address.split("@")[1]
            if rnd.random() < 0.15 else address)
        name = self._display_name(person, 0.05)
        subject = pick(rnd, EMAIL_SUBJECTS[c.topic]).format_map(slots)
        client_style = "outlook" if address.split("@")[1] in ("hotmail.com", "outlook.com", "live.com") else "gmail"
        mailer = _MAILERS[rnd.randrange(len(_MAILERS))]
        eml_share = 0.15
        thread: list[str] = []

        def emit(ts: int, sender: tuple[str, str], recipient: tuple[str, str], subj: str, text: str,
                 quote: str | None, message_id: str, html_part: bool, agent_side: bool) -> bool:
            data = self._build_email(
                sender=sender, recipient=recipient, subject=subj, ts=ts, message_id=message_id, parents=list(thread),
                text=text + ("\n\n" + quote if quote else ""), html_quote=self._html(text, quote) if html_part else None,
                mailer="Zendesk" if agent_side else mailer, crlf=rnd.random() < 0.3,
            )
            eml_name = f"{message_id.split('@')[0].replace('+', '')}.eml" if rnd.random() < eml_share else None
            ok = out.add_email(ts, data, sender[1], eml_name, message_id, person.person_id)
            if ok:
                thread.append(message_id)
            return ok

        # 1. the customer writes
        t = c.start
        greeting = pick(rnd, EMAIL_CUSTOMER_GREETINGS)
        opener = pick(rnd, CUSTOMER_OPENERS[c.topic]).format_map(slots)
        detail = pick(rnd, CUSTOMER_DETAILS[c.topic]).format_map(slots) if rnd.random() < 0.6 else ""
        lines = [greeting, "", opener + ("." if opener[-1] not in ".!?" else "")]
        if detail:
            lines.append(detail + ".")
        lines += ["", pick(rnd, EMAIL_CUSTOMER_SIGNOFFS), name]
        if person.own_mobile and rnd.random() < 0.2:
            lines.append("Tel: " + format_phone(person.own_mobile, rnd))
        if rnd.random() < 0.15:
            lines += ["", pick(rnd, EMAIL_MOBILE_FOOTERS)]
        first_text = "\n".join(lines).lstrip("\n")
        first_id = self._message_id(address)
        if not emit(t, (name, shown_address), ("Atende", SUPPORT_ADDRESS), subject, first_text, None, first_id,
                    rnd.random() < 0.5, False):
            return
        c.record_id = None  # surveys cannot name an e-mail thread by the ids of the contact systems
        protocol = slots["protocolo"]
        # 2. the helpdesk acknowledges automatically
        if rnd.random() < 0.5:
            t_ack = t + rnd.randrange(5, 90)
            emit(t_ack, ("Atende", NOREPLY_ADDRESS), (name, address), f"Recebemos sua mensagem - Protocolo {protocol}",
                 AUTO_ACK.format(protocolo=protocol), None, self._message_id(NOREPLY_ADDRESS), False, True)
        # 3. an agent replies, quoting the customer
        agent = c.agent
        tone = c.tone
        if agent is None or tone is None:
            return
        t = business_hours(t + int(3600 * rnd.choice((1, 2, 4, 8, 18, 26, 40)) * rnd.uniform(0.5, 1.2)), rnd)
        agent_text = self._agent_email_text(c, slots, tone, c.resolved)
        quote = self._quote(first_text, c.start, name, shown_address, "helpdesk")
        if not emit(t, (agent.name, agent.email), (name, address), "Re: " + subject, agent_text, quote,
                    self._message_id(agent.email), rnd.random() < 0.6, True):
            return
        c.end = t
        # 4. sometimes the customer answers back, quoting the agent
        if rnd.random() < (0.25 if c.resolved else 0.5):
            t2 = t + int(3600 * rnd.uniform(1, 40))
            reply = pick(rnd, EMAIL_CUSTOMER_REPLIES_OK if c.resolved else EMAIL_CUSTOMER_REPLIES_BAD)
            reply_text = f"{reply}\n\n{person.first_name}"
            quote2 = self._quote(agent_text, t, agent.name, agent.email, client_style)
            if not emit(t2, (name, shown_address), (agent.name, agent.email), "RE: " + subject if client_style ==
                        "outlook" else "Re: " + subject, reply_text, quote2, self._message_id(address),
                        rnd.random() < 0.5, False):
                return
            c.end = t2
            if not c.resolved and rnd.random() < 0.7:
                t3 = business_hours(t2 + int(3600 * rnd.uniform(2, 30)), rnd)
                resolved_now = rnd.random() < 0.5
                final = self._agent_email_text(c, slots, tone, resolved_now)
                quote3 = self._quote(reply_text, t2, name, shown_address, "helpdesk")
                if emit(t3, (agent.name, agent.email), (name, address), "Re: " + subject, final, quote3,
                        self._message_id(agent.email), rnd.random() < 0.6, True):
                    c.end = t3

    def _agent_email_text(self, c: Contact, slots: dict[str, str], tone: str, resolved: bool) -> str:
        rnd = self.rnd
        agent = c.agent
        assert agent is not None
        fact = pick(rnd, (FACTS_RESOLVED if resolved else FACTS_PENDING)[c.topic]).format_map(slots)
        wrap = pick(rnd, (WRAP_RESOLVED if resolved else WRAP_PENDING)[tone]).format(fato=fact, Fato=capitalise(fact))
        closer = pick(rnd, AGENT_CLOSERS[tone]).format_map(slots)
        signature = pick(rnd, AGENT_SIGNATURES[tone]).format(agente=agent.name, primeiro=agent.name.split()[0])
        opener = pick(rnd, EMAIL_AGENT_OPENERS[tone]).format_map(slots)
        return f"{opener}\n\n{wrap}\n\n{closer}\n\n{signature}"
