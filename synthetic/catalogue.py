"""Fixed catalogues of the synthetic world: channels, topics, tones, personas, places, products, agents."""
from __future__ import annotations

import random
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TypeVar

from faker import Faker

TONES = ("formal", "friendly", "empathetic", "concise")
TOPICS = ("billing", "delivery", "technical", "cancellation", "product_info", "account", "complaint", "returns")

# Digital channels that land as conversations/ JSONL; WhatsApp, e-mail and voice have their own sources.
CONVERSATION_CHANNELS = (
    "webchat", "chatbot", "app", "telegram", "messenger", "instagram", "facebook", "twitter", "linkedin",
)
CONTACT_CHANNELS = CONVERSATION_CHANNELS + ("whatsapp", "email", "voice")
CONVERSATION_PREFIX = MappingProxyType({
    "webchat": "wc", "chatbot": "cb", "app": "app", "telegram": "tg", "messenger": "msg",
    "instagram": "ig", "facebook": "fb", "twitter": "tw", "linkedin": "li",
})
SOCIAL_PLATFORMS = ("telegram", "messenger", "instagram", "facebook", "twitter", "linkedin")

INCOME_BANDS = ("A", "B1", "B2", "C1", "C2", "DE")  # Critério Brasil (ABEP) classes

ACTIONS = (
    "whatsapp_followup", "product_offer", "satisfaction_survey", "kb_article",
    "escalate_to_human", "retention_call", "no_action",
)
ACTION_CHANNELS: Mapping[str, tuple[tuple[str, float], ...]] = MappingProxyType({
    "whatsapp_followup": (("whatsapp", 1.0),),
    "product_offer": (("email", 0.4), ("whatsapp", 0.25), ("push", 0.25), ("sms", 0.1)),
    "satisfaction_survey": (("email", 0.5), ("sms", 0.2), ("whatsapp", 0.3)),
    "kb_article": (("email", 0.6), ("push", 0.4)),
    "escalate_to_human": (("voice", 0.6), ("whatsapp", 0.4)),
    "retention_call": (("voice", 1.0),),
    "no_action": (),
})

CALL_QUEUES = MappingProxyType({
    "billing": "financeiro", "delivery": "logistica", "technical": "suporte_tecnico",
    "cancellation": "retencao", "product_info": "vendas", "account": "cadastro",
    "complaint": "ouvidoria", "returns": "trocas_devolucoes",
})

# How hard a topic is to close in one contact, and how often a bot alone can close it.
TOPIC_RESOLUTION = MappingProxyType({
    "billing": 0.70, "delivery": 0.62, "technical": 0.55, "cancellation": 0.60,
    "product_info": 0.85, "account": 0.80, "complaint": 0.45, "returns": 0.62,
})
BOT_CONTAINMENT = MappingProxyType({
    "billing": 0.40, "delivery": 0.45, "technical": 0.25, "cancellation": 0.08,
    "product_info": 0.55, "account": 0.50, "complaint": 0.04, "returns": 0.30,
})
TOPIC_MOOD = MappingProxyType({
    "billing": -0.04, "delivery": -0.03, "technical": -0.03, "cancellation": -0.08,
    "product_info": 0.04, "account": 0.02, "complaint": -0.12, "returns": -0.03,
})

# hour-of-day weights (0..23) of when people of a rhythm reach out
HOUR_PROFILES: Mapping[str, tuple[float, ...]] = MappingProxyType({
    "evening": (1, .5, .2, .1, .1, .1, .3, .8, 1.5, 2, 2.2, 2.5, 3, 2.8, 2.5, 2.5, 2.8, 3.2, 4, 5, 5.5, 5.5, 4.5, 2.5),
    "business": (.1, 0, 0, 0, 0, .1, .4, 2, 4.5, 5.5, 5.5, 5, 5.5, 5, 5, 5, 4.5, 4, 3, 2.2, 1.8, 1.4, .8, .3),
    "morning": (0, 0, 0, 0, 0, .2, 1.5, 4, 6, 7, 6.5, 5, 3.5, 3.5, 3.5, 3, 2.5, 2, 1.5, 1.2, .8, .4, .1, 0),
    "spread": (.3, .1, 0, 0, 0, .1, .5, 1.5, 3, 4, 4.2, 4.2, 4.5, 4.2, 4, 4, 4, 4, 4, 4, 3.8, 3, 2, 1),
})


@dataclass(frozen=True)
class Persona:
    key: str
    name: str
    share: float
    age: tuple[float, float, int, int]          # mean, sd, min, max
    income: Mapping[str, float]
    professions: tuple[str, ...]
    tones: Mapping[str, float]
    categories: Mapping[str, float]
    channels: Mapping[str, float]
    topics: Mapping[str, float]
    contacts_per_month: float
    never_contacts: float                        # share of people who do not reach out at all
    satisfaction: float                          # baseline of the latent satisfaction, 0..1
    survey_rate: float
    orders_per_month: float
    price_level: float                           # 0 buys the cheapest of a category, 1 the dearest
    order_channels: Mapping[str, float]
    crm_share: float
    email_share: float
    old_whatsapp_share: float                    # accounts whose wa_id still lacks the ninth digit
    hours: str
    actions_per_month: float
    # action -> (probability of a response, probability of conversion once responded)
    action_response: Mapping[str, tuple[float, float]]


_V = TypeVar("_V")


def _m(**weights: _V) -> Mapping[str, _V]:
    """A read-only mapping of the keyword arguments: weights (floats) or, for action_response, pairs."""
    return MappingProxyType(dict(weights))


PERSONAS: tuple[Persona, ...] = (
    Persona(
        key="digital_native", name="Jovem digital", share=0.22, age=(24, 4, 18, 33),
        income=_m(A=0.03, B1=0.10, B2=0.22, C1=0.30, C2=0.25, DE=0.10),
        professions=("Estudante", "Estagiário(a)", "Desenvolvedor(a) júnior", "Designer gráfico", "Vendedor(a)",
                     "Atendente de loja", "Criador(a) de conteúdo", "Analista de marketing júnior",
                     "Entregador(a) de aplicativo", "Assistente administrativo"),
        tones=_m(friendly=0.58, concise=0.24, empathetic=0.11, formal=0.07),
        categories=_m(games=0.25, celulares=0.22, moda=0.2, informatica=0.14, beleza_e_saude=0.08, esporte_e_lazer=0.06,
                      tv_e_audio=0.05),
        channels=_m(whatsapp=0.27, instagram=0.14, app=0.17, chatbot=0.12, webchat=0.07, telegram=0.08, twitter=0.06,
                    messenger=0.03, email=0.03, voice=0.03),
        topics=_m(billing=0.14, delivery=0.26, technical=0.16, cancellation=0.05, product_info=0.16, account=0.12,
                  complaint=0.04, returns=0.07),
        contacts_per_month=1.0, never_contacts=0.18, satisfaction=0.68, survey_rate=0.14,
        orders_per_month=0.7, price_level=0.35,
        order_channels=_m(app=0.55, web=0.3, marketplace=0.12, store=0.03),
        crm_share=0.62, email_share=0.9, old_whatsapp_share=0.05, hours="evening", actions_per_month=0.9,
        action_response=_m(whatsapp_followup=(0.45, 0.55), product_offer=(0.22, 0.35), satisfaction_survey=(0.2, 0.9),
                           kb_article=(0.5, 0.7), escalate_to_human=(0.2, 0.4), retention_call=(0.08, 0.2),
                           no_action=(0.0, 0.03)),
    ),
    Persona(
        key="busy_professional", name="Profissional ocupado", share=0.2, age=(38, 6, 26, 55),
        income=_m(A=0.18, B1=0.34, B2=0.3, C1=0.14, C2=0.04, DE=0.0),
        professions=("Advogado(a)", "Engenheiro(a) civil", "Gerente de projetos", "Médico(a)", "Analista financeiro",
                     "Consultor(a) de TI", "Arquiteto(a)", "Contador(a)", "Executivo(a) de vendas",
                     "Gerente de produto", "Coordenador(a) de RH"),
        tones=_m(concise=0.58, formal=0.2, friendly=0.14, empathetic=0.08),
        categories=_m(informatica=0.28, celulares=0.2, casa_e_decoracao=0.16, eletrodomesticos=0.12,
                      esporte_e_lazer=0.1, livros=0.08, beleza_e_saude=0.06),
        channels=_m(whatsapp=0.26, app=0.2, email=0.17, webchat=0.14, chatbot=0.08, voice=0.08, linkedin=0.04,
                    twitter=0.03),
        topics=_m(billing=0.22, delivery=0.24, technical=0.14, cancellation=0.05, product_info=0.1, account=0.12,
                  complaint=0.05, returns=0.08),
        contacts_per_month=0.85, never_contacts=0.2, satisfaction=0.66, survey_rate=0.08,
        orders_per_month=0.8, price_level=0.6,
        order_channels=_m(app=0.45, web=0.45, marketplace=0.05, store=0.05),
        crm_share=0.85, email_share=1.0, old_whatsapp_share=0.15, hours="business", actions_per_month=0.8,
        action_response=_m(whatsapp_followup=(0.4, 0.6), product_offer=(0.12, 0.3), satisfaction_survey=(0.1, 0.9),
                           kb_article=(0.35, 0.6), escalate_to_human=(0.25, 0.5), retention_call=(0.1, 0.25),
                           no_action=(0.0, 0.04)),
    ),
    Persona(
        key="senior_traditional", name="Sênior tradicional", share=0.15, age=(69, 6, 60, 90),
        income=_m(A=0.05, B1=0.12, B2=0.25, C1=0.3, C2=0.2, DE=0.08),
        professions=("Aposentado(a)", "Professor(a) aposentado(a)", "Comerciante", "Do lar",
                     "Servidor(a) público(a) aposentado(a)", "Bancário(a) aposentado(a)", "Costureira", "Pensionista"),
        tones=_m(formal=0.5, empathetic=0.36, friendly=0.1, concise=0.04),
        categories=_m(eletrodomesticos=0.26, casa_e_decoracao=0.24, beleza_e_saude=0.2, livros=0.16, pet=0.08,
                      tv_e_audio=0.06),
        channels=_m(voice=0.55, whatsapp=0.22, email=0.09, facebook=0.08, webchat=0.04, chatbot=0.02),
        topics=_m(billing=0.3, delivery=0.18, technical=0.18, cancellation=0.05, product_info=0.1, account=0.1,
                  complaint=0.05, returns=0.04),
        contacts_per_month=0.8, never_contacts=0.2, satisfaction=0.72, survey_rate=0.22,
        orders_per_month=0.35, price_level=0.45,
        order_channels=_m(phone=0.35, web=0.3, store=0.25, app=0.1),
        crm_share=0.8, email_share=0.45, old_whatsapp_share=0.5, hours="morning", actions_per_month=0.7,
        action_response=_m(whatsapp_followup=(0.2, 0.4), product_offer=(0.08, 0.3), satisfaction_survey=(0.35, 0.9),
                           kb_article=(0.05, 0.3), escalate_to_human=(0.5, 0.7), retention_call=(0.45, 0.5),
                           no_action=(0.0, 0.02)),
    ),
    Persona(
        key="family_budget", name="Família econômica", share=0.18, age=(38, 7, 25, 58),
        income=_m(A=0.0, B1=0.03, B2=0.12, C1=0.3, C2=0.35, DE=0.2),
        professions=("Auxiliar administrativo", "Técnico(a) de enfermagem", "Motorista", "Professor(a)",
                     "Cabeleireiro(a)", "Autônomo(a)", "Operador(a) de caixa", "Diarista", "Pedreiro",
                     "Auxiliar de produção", "Recepcionista"),
        tones=_m(empathetic=0.42, friendly=0.36, formal=0.14, concise=0.08),
        categories=_m(brinquedos=0.22, casa_e_decoracao=0.2, eletrodomesticos=0.16, moda=0.16, pet=0.1,
                      beleza_e_saude=0.08, celulares=0.08),
        channels=_m(whatsapp=0.36, voice=0.15, facebook=0.09, app=0.1, webchat=0.09, chatbot=0.1, instagram=0.05,
                    messenger=0.06),
        topics=_m(billing=0.32, delivery=0.24, technical=0.08, cancellation=0.06, product_info=0.1, account=0.06,
                  complaint=0.06, returns=0.08),
        contacts_per_month=1.0, never_contacts=0.15, satisfaction=0.63, survey_rate=0.15,
        orders_per_month=0.55, price_level=0.15,
        order_channels=_m(app=0.3, web=0.3, marketplace=0.2, store=0.15, phone=0.05),
        crm_share=0.72, email_share=0.75, old_whatsapp_share=0.25, hours="spread", actions_per_month=1.0,
        action_response=_m(whatsapp_followup=(0.45, 0.5), product_offer=(0.35, 0.4), satisfaction_survey=(0.18, 0.9),
                           kb_article=(0.12, 0.4), escalate_to_human=(0.3, 0.5), retention_call=(0.3, 0.35),
                           no_action=(0.0, 0.03)),
    ),
    Persona(
        key="premium_loyal", name="Cliente premium fiel", share=0.12, age=(48, 9, 30, 75),
        income=_m(A=0.55, B1=0.35, B2=0.1, C1=0.0, C2=0.0, DE=0.0),
        professions=("Empresário(a)", "Diretor(a) comercial", "Médico(a)", "Juiz(a)", "Dentista", "Piloto de avião",
                     "Sócio(a) de escritório de advocacia", "Investidor(a)", "Engenheiro(a) sênior"),
        tones=_m(formal=0.46, friendly=0.26, concise=0.2, empathetic=0.08),
        categories=_m(tv_e_audio=0.24, informatica=0.2, celulares=0.2, esporte_e_lazer=0.14, eletrodomesticos=0.12,
                      casa_e_decoracao=0.1),
        channels=_m(app=0.25, whatsapp=0.2, voice=0.15, email=0.15, webchat=0.15, instagram=0.06, linkedin=0.04),
        topics=_m(billing=0.12, delivery=0.26, technical=0.16, cancellation=0.02, product_info=0.24, account=0.1,
                  complaint=0.03, returns=0.07),
        contacts_per_month=0.9, never_contacts=0.12, satisfaction=0.82, survey_rate=0.2,
        orders_per_month=1.4, price_level=0.85,
        order_channels=_m(app=0.5, web=0.35, store=0.1, phone=0.05),
        crm_share=0.97, email_share=1.0, old_whatsapp_share=0.2, hours="business", actions_per_month=1.1,
        action_response=_m(whatsapp_followup=(0.35, 0.5), product_offer=(0.4, 0.5), satisfaction_survey=(0.4, 0.95),
                           kb_article=(0.2, 0.5), escalate_to_human=(0.3, 0.6), retention_call=(0.2, 0.4),
                           no_action=(0.0, 0.08)),
    ),
    Persona(
        key="churn_risk", name="Insatisfeito em risco", share=0.13, age=(40, 10, 20, 70),
        income=_m(A=0.05, B1=0.12, B2=0.22, C1=0.28, C2=0.23, DE=0.1),
        professions=("Analista de sistemas", "Vendedor(a)", "Motorista de aplicativo", "Técnico(a) em eletrônica",
                     "Supervisor(a) de loja", "Corretor(a) de imóveis", "Autônomo(a)", "Assistente financeiro",
                     "Enfermeiro(a)"),
        tones=_m(empathetic=0.6, concise=0.17, formal=0.14, friendly=0.09),
        categories=_m(celulares=0.18, informatica=0.16, eletrodomesticos=0.16, tv_e_audio=0.14, moda=0.12,
                      casa_e_decoracao=0.12, games=0.12),
        channels=_m(whatsapp=0.25, voice=0.2, twitter=0.11, instagram=0.09, webchat=0.12, facebook=0.08, email=0.1,
                    chatbot=0.05),
        topics=_m(billing=0.22, delivery=0.14, technical=0.12, cancellation=0.18, product_info=0.03, account=0.05,
                  complaint=0.22, returns=0.04),
        contacts_per_month=1.8, never_contacts=0.05, satisfaction=0.42, survey_rate=0.25,
        orders_per_month=0.3, price_level=0.4,
        order_channels=_m(web=0.45, app=0.3, marketplace=0.2, store=0.05),
        crm_share=0.82, email_share=0.9, old_whatsapp_share=0.2, hours="spread", actions_per_month=1.2,
        action_response=_m(whatsapp_followup=(0.25, 0.3), product_offer=(0.05, 0.15), satisfaction_survey=(0.3, 0.9),
                           kb_article=(0.08, 0.2), escalate_to_human=(0.55, 0.55), retention_call=(0.5, 0.45),
                           no_action=(0.0, 0.01)),
    ),
)
PERSONA_BY_KEY: Mapping[str, Persona] = MappingProxyType({p.key: p for p in PERSONAS})


@dataclass(frozen=True)
class City:
    name: str
    state: str
    ddd: str
    weight: float


# Real cities with their state and area code (DDD), weighted roughly by population,
# so city, state and phone prefix always agree.
CITIES: tuple[City, ...] = tuple(City(*row) for row in (
    ("São Paulo", "SP", "11", 123), ("Guarulhos", "SP", "11", 14), ("Campinas", "SP", "19", 12),
    ("São Bernardo do Campo", "SP", "11", 8), ("Santo André", "SP", "11", 7), ("Osasco", "SP", "11", 7),
    ("Sorocaba", "SP", "15", 7), ("Ribeirão Preto", "SP", "16", 7), ("Santos", "SP", "13", 4),
    ("São José dos Campos", "SP", "12", 7), ("Rio de Janeiro", "RJ", "21", 67), ("Niterói", "RJ", "21", 5),
    ("Duque de Caxias", "RJ", "21", 9), ("Nova Iguaçu", "RJ", "21", 8), ("São Gonçalo", "RJ", "21", 9),
    ("Belo Horizonte", "MG", "31", 25), ("Contagem", "MG", "31", 6), ("Uberlândia", "MG", "34", 7),
    ("Juiz de Fora", "MG", "32", 5), ("Salvador", "BA", "71", 24), ("Feira de Santana", "BA", "75", 6),
    ("Fortaleza", "CE", "85", 24), ("Recife", "PE", "81", 15), ("Jaboatão dos Guararapes", "PE", "81", 6),
    ("Brasília", "DF", "61", 28), ("Goiânia", "GO", "62", 14), ("Aparecida de Goiânia", "GO", "62", 5),
    ("Manaus", "AM", "92", 21), ("Belém", "PA", "91", 13), ("Curitiba", "PR", "41", 18),
    ("Londrina", "PR", "43", 5), ("Maringá", "PR", "44", 4), ("Porto Alegre", "RS", "51", 13),
    ("Caxias do Sul", "RS", "54", 5), ("Florianópolis", "SC", "48", 5), ("Joinville", "SC", "47", 6),
    ("Blumenau", "SC", "47", 4), ("Vitória", "ES", "27", 3), ("Vila Velha", "ES", "27", 5),
    ("Serra", "ES", "27", 5), ("São Luís", "MA", "98", 10), ("Teresina", "PI", "86", 9),
    ("Natal", "RN", "84", 8), ("João Pessoa", "PB", "83", 8), ("Campina Grande", "PB", "83", 4),
    ("Maceió", "AL", "82", 10), ("Aracaju", "SE", "79", 6), ("Cuiabá", "MT", "65", 6),
    ("Campo Grande", "MS", "67", 9), ("Porto Velho", "RO", "69", 5), ("Macapá", "AP", "96", 4),
    ("Rio Branco", "AC", "68", 4), ("Boa Vista", "RR", "95", 4), ("Palmas", "TO", "63", 3),
))


@dataclass(frozen=True)
class Product:
    product_id: str
    name: str
    category: str
    price: float
    active: bool


# category -> (item, base price, variants); each variant multiplies the price
_PRODUCT_LINES: Mapping[str, tuple[tuple[str, float, tuple[tuple[str, float], ...]], ...]] = MappingProxyType({
    "celulares": (
        ("Smartphone Samsung Galaxy A15", 999.0, (("128GB", 1.0), ("256GB", 1.2))),
        ("Smartphone Samsung Galaxy S24", 4299.0, (("128GB", 1.0), ("256GB", 1.15), ("512GB", 1.4))),
        ("Smartphone Motorola Moto G54", 1199.0, (("128GB", 1.0), ("256GB", 1.18))),
        ("Smartphone Xiaomi Redmi Note 13", 1399.0, (("128GB", 1.0), ("256GB", 1.2))),
        ("iPhone 15", 5999.0, (("128GB", 1.0), ("256GB", 1.17), ("512GB", 1.5))),
        ("Capa protetora antichoque", 49.9, (("preta", 1.0), ("transparente", 1.0))),
        ("Carregador turbo USB-C 25W", 119.0, (("", 1.0),)),
        ("Fone de ouvido Bluetooth JBL Tune", 249.0, (("preto", 1.0), ("branco", 1.0))),
        ("Película de vidro 3D", 29.9, (("", 1.0),)),
    ),
    "informatica": (
        ("Notebook Lenovo IdeaPad 3 15,6\"", 3299.0, (("8GB 256GB SSD", 1.0), ("16GB 512GB SSD", 1.25))),
        ("Notebook Dell Inspiron 15", 3899.0, (("i5 8GB", 1.0), ("i7 16GB", 1.35))),
        ("MacBook Air M2", 8999.0, (("256GB", 1.0), ("512GB", 1.2))),
        ("Mouse sem fio Logitech M170", 69.9, (("", 1.0),)),
        ("Teclado mecânico Redragon Kumara", 229.0, (("switch azul", 1.0), ("switch vermelho", 1.0))),
        ("Monitor LG 24\" IPS Full HD", 799.0, (("", 1.0),)),
        ("SSD Kingston NV2", 269.0, (("500GB", 1.0), ("1TB", 1.6))),
        ("Impressora multifuncional Epson EcoTank L3250", 1099.0, (("", 1.0),)),
        ("Roteador TP-Link Archer C6", 289.0, (("", 1.0),)),
        ("Webcam Logitech C920", 449.0, (("", 1.0),)),
    ),
    "eletrodomesticos": (
        ("Geladeira Brastemp Frost Free", 3799.0, (("375L inox", 1.0), ("443L inox", 1.25))),
        ("Máquina de lavar Electrolux", 2199.0, (("11kg", 1.0), ("13kg", 1.2))),
        ("Micro-ondas Panasonic", 649.0, (("21L", 1.0), ("32L", 1.3))),
        ("Air fryer Mondial", 399.0, (("4L", 1.0), ("5,5L", 1.2))),
        ("Liquidificador Philips Walita", 219.0, (("", 1.0),)),
        ("Cafeteira Nespresso Essenza Mini", 499.0, (("preta", 1.0), ("vermelha", 1.0))),
        ("Aspirador robô WAP", 899.0, (("", 1.0),)),
        ("Ventilador Arno 40cm", 229.0, (("", 1.0),)),
        ("Fogão Consul 4 bocas", 1199.0, (("branco", 1.0), ("inox", 1.15))),
    ),
    "tv_e_audio": (
        ("Smart TV Samsung Crystal UHD 4K", 2499.0, (("50\"", 1.0), ("55\"", 1.15), ("65\"", 1.6))),
        ("Smart TV LG OLED evo", 6999.0, (("55\"", 1.0), ("65\"", 1.45))),
        ("Smart TV TCL Full HD", 1399.0, (("40\"", 1.0), ("43\"", 1.1))),
        ("Soundbar JBL Cinema SB190", 1199.0, (("", 1.0),)),
        ("Caixa de som JBL Flip 6", 699.0, (("preta", 1.0), ("azul", 1.0))),
        ("Fone Sony WH-1000XM5", 2299.0, (("preto", 1.0), ("prata", 1.0))),
        ("Echo Dot 5ª geração", 399.0, (("", 1.0),)),
    ),
    "casa_e_decoracao": (
        ("Jogo de panelas Tramontina antiaderente", 399.0, (("5 peças", 1.0), ("10 peças", 1.6))),
        ("Jogo de cama 200 fios", 159.0, (("casal", 1.0), ("queen", 1.2), ("king", 1.4))),
        ("Kit toalhas de banho", 119.0, (("4 peças", 1.0),)),
        ("Luminária de mesa articulada", 89.9, (("", 1.0),)),
        ("Tapete sala 2x1,5m", 249.0, (("cinza", 1.0), ("bege", 1.0))),
        ("Organizador de armário", 59.9, (("", 1.0),)),
        ("Cortina blackout 2,8m", 139.0, (("", 1.0),)),
    ),
    "moda": (
        ("Tênis Nike Revolution 7", 349.0, (("38", 1.0), ("41", 1.0), ("43", 1.0))),
        ("Tênis Adidas Runfalcon", 299.0, (("37", 1.0), ("40", 1.0))),
        ("Camiseta básica algodão", 49.9, (("P", 1.0), ("M", 1.0), ("G", 1.0))),
        ("Calça jeans slim", 159.0, (("38", 1.0), ("42", 1.0))),
        ("Jaqueta corta-vento", 229.0, (("M", 1.0), ("G", 1.0))),
        ("Mochila executiva", 189.0, (("", 1.0),)),
        ("Vestido midi", 179.0, (("P", 1.0), ("M", 1.0))),
    ),
    "beleza_e_saude": (
        ("Perfume O Boticário Malbec 100ml", 199.0, (("", 1.0),)),
        ("Kit Natura Ekos", 149.0, (("", 1.0),)),
        ("Secador de cabelo Taiff", 259.0, (("", 1.0),)),
        ("Prancha alisadora Philco", 139.0, (("", 1.0),)),
        ("Escova elétrica Oral-B", 219.0, (("", 1.0),)),
        ("Protetor solar FPS 50", 69.9, (("200ml", 1.0),)),
        ("Medidor de pressão digital Omron", 239.0, (("", 1.0),)),
    ),
    "esporte_e_lazer": (
        ("Bicicleta Caloi aro 29", 1899.0, (("", 1.0),)),
        ("Esteira elétrica Kikos", 2999.0, (("", 1.0),)),
        ("Kit halteres emborrachados", 189.0, (("10kg", 1.0), ("20kg", 1.7))),
        ("Tapete de yoga", 89.9, (("", 1.0),)),
        ("Bola de futebol Nike", 129.0, (("", 1.0),)),
        ("Barraca de camping 4 pessoas", 399.0, (("", 1.0),)),
        ("Relógio Garmin Forerunner 55", 1499.0, (("", 1.0),)),
    ),
    "brinquedos": (
        ("LEGO Classic caixa criativa", 299.0, (("", 1.0),)),
        ("Boneca Baby Alive", 179.0, (("", 1.0),)),
        ("Pista Hot Wheels", 249.0, (("", 1.0),)),
        ("Quebra-cabeça 1000 peças", 69.9, (("", 1.0),)),
        ("Jogo Banco Imobiliário", 129.0, (("", 1.0),)),
        ("Patinete infantil", 199.0, (("", 1.0),)),
    ),
    "games": (
        ("Console PlayStation 5 Slim", 3799.0, (("digital", 1.0), ("com leitor", 1.1))),
        ("Console Xbox Series S", 2499.0, (("512GB", 1.0), ("1TB", 1.2))),
        ("Console Nintendo Switch OLED", 2299.0, (("", 1.0),)),
        ("Controle DualSense", 449.0, (("branco", 1.0), ("preto", 1.0))),
        ("Jogo EA Sports FC 25", 299.0, (("PS5", 1.0), ("Xbox", 1.0))),
        ("Headset gamer HyperX Cloud", 399.0, (("", 1.0),)),
        ("Cadeira gamer", 899.0, (("", 1.0),)),
    ),
    "livros": (
        ("Livro Torto Arado", 54.9, (("", 1.0),)),
        ("Livro O Alquimista", 39.9, (("", 1.0),)),
        ("Livro Hábitos Atômicos", 59.9, (("", 1.0),)),
        ("Livro Pai Rico, Pai Pobre", 49.9, (("", 1.0),)),
        ("Livro Tudo é Rio", 44.9, (("", 1.0),)),
        ("Box Harry Potter", 249.0, (("", 1.0),)),
    ),
    "pet": (
        ("Ração Golden cães adultos", 169.0, (("15kg", 1.0),)),
        ("Ração Whiskas gatos", 99.0, (("10kg", 1.0),)),
        ("Arranhador para gatos", 129.0, (("", 1.0),)),
        ("Cama pet acolchoada", 119.0, (("M", 1.0), ("G", 1.2))),
        ("Coleira antipulgas", 89.9, (("", 1.0),)),
    ),
})
CATEGORIES = tuple(_PRODUCT_LINES)


def _retail_price(value: float) -> float:
    # Brazilian shelf prices end in ,90 or ,99
    whole = int(value)
    return whole + (0.99 if whole % 2 else 0.9)


def build_products(seed: int, target: int = 200) -> tuple[Product, ...]:
    """About `target` products across every category, the same for a given seed."""
    rnd = random.Random(seed ^ 0x5EED)
    lines = [(cat, item, base, variants) for cat, items in _PRODUCT_LINES.items() for item, base, variants in items]
    products: list[Product] = []
    # Colour/size variants first, then editions ("2025", "Edição especial") to reach the target count.
    editions = ("", " - Edição 2025", " - Kit presente", " - Reembalado")
    for edition in editions:
        for cat, item, base, variants in lines:
            if len(products) >= target:
                break
            for label, factor in variants:
                if len(products) >= target:
                    break
                name = f"{item} {label}".strip() + edition
                price_factor = {"": 1.0, " - Edição 2025": 1.08, " - Kit presente": 1.15, " - Reembalado": 0.82}[edition]
                price = _retail_price(base * factor * price_factor * rnd.uniform(0.95, 1.05))
                products.append(Product(
                    product_id=f"SKU-{100000 + len(products) * 37 + rnd.randrange(37):06d}",
                    name=name, category=cat, price=round(price, 2), active=rnd.random() > 0.07,
                ))
    products.sort(key=lambda p: p.product_id)
    return tuple(products)


@dataclass(frozen=True)
class Agent:
    agent_id: str
    name: str
    email: str
    style: str  # the tone this agent writes in unless told otherwise


def build_agents(seed: int, count: int = 60) -> tuple[Agent, ...]:
    """The service team; every chunk rebuilds the same team from the seed."""
    fake = Faker("pt_BR")
    fake.seed_instance(seed ^ 0xA6E)
    rnd = random.Random(seed ^ 0xA6E)
    agents = []
    for i in range(count):
        female = rnd.random() < 0.62
        first = (fake.first_name_female() if female else fake.first_name_male()).split()[0]
        last = fake.last_name()
        local = f"{_ascii_slug(first)}.{_ascii_slug(last.split()[-1])}{i + 1}"
        agents.append(Agent(
            agent_id=f"ag-{i + 1:02d}", name=f"{first} {last}", email=f"{local}@atende.com.br",
            style=TONES[rnd.randrange(len(TONES))],
        ))
    return tuple(agents)


def _ascii_slug(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(ch for ch in folded.lower() if ch.isalnum())
