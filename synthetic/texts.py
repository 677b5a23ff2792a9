"""Portuguese texts of customers, bots and agents.

Agent texts are assembled from a tone's opener, wrapper and closer around a
topic's fact, so the tone an agent used is legible in the words (formal:
"Prezado(a)", "informamos", "atenciosamente"; friendly: "Oi", emojis;
empathetic: "sinto muito", "entendo"; concise: short, no greeting).
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType

Texts = tuple[str, ...]

MONTHS = ("janeiro", "fevereiro", "março", "abril", "maio", "junho", "julho", "agosto", "setembro", "outubro",
          "novembro", "dezembro")
MONTHS_SHORT = ("jan.", "fev.", "mar.", "abr.", "mai.", "jun.", "jul.", "ago.", "set.", "out.", "nov.", "dez.")
WEEKDAYS_SHORT = ("seg.", "ter.", "qua.", "qui.", "sex.", "sáb.", "dom.")

CUSTOMER_OPENERS: Mapping[str, Texts] = MappingProxyType({
    "billing": (
        "Oi, minha fatura veio com um valor errado",
        "Boa tarde, fui cobrado duas vezes no cartão pela mesma compra",
        "Olá, a fatura de {mes} veio com uma cobrança de R$ {valor} que não reconheço",
        "Preciso da segunda via do boleto, o meu venceu ontem",
        "Por que meu boleto veio mais caro esse mês?",
        "Paguei o boleto e ainda aparece como pendente no app",
        "Bom dia. Gostaria de entender a cobrança de R$ {valor} na minha fatura.",
        "O pix que eu fiz não foi reconhecido, o pedido continua aguardando pagamento",
        "Parcelei em 10x mas estão cobrando em 12, isso está errado",
    ),
    "delivery": (
        "Meu pedido {pedido} ainda não chegou e o prazo já passou",
        "Olá, quero saber onde está minha entrega",
        "O rastreio não atualiza há {dias} dias",
        "Comprei {um_produto} e até agora nada de chegar",
        "Boa noite, o entregador marcou como entregue mas eu não recebi nada",
        "O pedido {pedido} veio com a caixa amassada",
        "Dá pra mudar o endereço de entrega do pedido {pedido}?",
        "A previsão era pra ontem e ninguém apareceu",
    ),
    "technical": (
        "{Meu_produto} parou de ligar",
        "O app fica travando na tela de login",
        "Comprei {um_produto} e não conecta no wi-fi de jeito nenhum",
        "Olá, {o_produto} está esquentando muito",
        "Não consigo finalizar a compra no site, dá erro no pagamento",
        "A tela {do_produto} ficou com listras depois de uma semana",
        "O aplicativo não abre desde a atualização",
        "Bom dia, {o_produto} faz um barulho estranho quando liga",
    ),
    "cancellation": (
        "Quero cancelar meu pedido {pedido}",
        "Quero cancelar a assinatura, não uso mais",
        "Como faço pra cancelar a compra {do_produto}?",
        "Desisti da compra, quero o dinheiro de volta",
        "Boa tarde. Solicito o cancelamento do pedido {pedido}.",
        "Vou cancelar tudo, cansei desse serviço",
    ),
    "product_info": (
        "{O_produto} tem garantia de quanto tempo?",
        "Vocês têm {o_produto} em outra cor?",
        "Qual a diferença entre os modelos {do_produto}?",
        "{O_produto} é bivolt?",
        "Oi! Quando {o_produto} volta pro estoque?",
        "Dá pra parcelar {o_produto} sem juros?",
        "Boa tarde, {o_produto} vem com nota fiscal?",
    ),
    "account": (
        "Não consigo entrar na minha conta",
        "Esqueci minha senha e o e-mail de recuperação não chega",
        "Quero trocar o e-mail do meu cadastro",
        "Como atualizo meu endereço no cadastro?",
        "Minha conta foi bloqueada, o que aconteceu?",
        "Preciso alterar o telefone cadastrado",
        "Quero parar de receber e-mails de promoção",
    ),
    "complaint": (
        "Estou muito insatisfeito com o atendimento de vocês",
        "É a terceira vez que entro em contato e ninguém resolve!",
        "Péssimo! Comprei {um_produto} e veio com defeito",
        "Vou registrar reclamação no Procon e no Reclame Aqui",
        "Fui muito mal atendido na loja",
        "Um absurdo, me prometeram retorno em 24h e ninguém ligou",
        "Estou esperando há {dias} dias uma solução",
    ),
    "returns": (
        "Quero trocar {o_produto}, veio no tamanho errado",
        "Como faço para devolver o pedido {pedido}?",
        "{O_produto} veio diferente do anúncio, quero devolver",
        "Já enviei a devolução e o reembolso não caiu",
        "Posso trocar {o_produto} na loja física?",
        "Preciso do código de postagem para a devolução",
    ),
})

CUSTOMER_DETAILS: Mapping[str, Texts] = MappingProxyType({
    "billing": ("O número do pedido é {pedido}", "É a fatura com vencimento dia 10", "Foi no cartão final 4821",
                "Paguei dia {dia} pelo app do banco", "O valor certo seria R$ {valor}"),
    "delivery": ("Pedido {pedido}", "Comprei dia {dia}", "O código de rastreio não funciona",
                 "Moro em apartamento, tem portaria 24h", "O número é {pedido}, comprei pelo app"),
    "technical": ("Já reiniciei e não adiantou", "Comprei faz uns {dias} dias", "Pedido {pedido}",
                  "Aparece uma mensagem de erro 503", "Já tentei em outro celular também"),
    "cancellation": ("Pedido {pedido}", "Não quero mais, encontrei mais barato", "Comprei dia {dia}",
                     "O motivo é que demorou demais"),
    "product_info": ("É {o_produto} mesmo", "Seria para presente", "Queria na cor preta",
                     "Vi no site mas não tinha essa informação"),
    "account": ("Meu e-mail é o mesmo do cadastro", "Já tentei redefinir a senha 3 vezes",
                "O cadastro está no meu nome", "Aparece conta bloqueada"),
    "complaint": ("Já liguei {dias} vezes", "Pedido {pedido}", "Quero uma solução hoje",
                  "Ninguém me dá uma resposta"),
    "returns": ("Pedido {pedido}", "Ainda está na caixa, nem usei", "Quero o reembolso, não a troca",
                "Comprei dia {dia}"),
})

CUSTOMER_MENU_CHOICE: Mapping[str, Texts] = MappingProxyType({
    "billing": ("1", "fatura", "Faturas e pagamentos"), "delivery": ("2", "pedido", "entrega"),
    "technical": ("3", "suporte", "problema técnico"), "account": ("4", "minha conta", "cadastro"),
    "product_info": ("6", "produtos", "dúvida sobre produto"), "cancellation": ("5", "cancelar", "cancelamento"),
    "complaint": ("5", "reclamação", "atendente"), "returns": ("2", "troca", "devolução"),
})
CUSTOMER_ASK_HUMAN: Texts = (
    "Quero falar com um atendente", "atendente", "falar com humano por favor", "Não é isso, preciso falar com uma pessoa",
    "Atendente!!", "isso não resolve, me passa pra alguém",
)
CUSTOMER_THANKS: Texts = (
    "Obrigada!", "valeu!", "Perfeito, muito obrigado", "Ok, obrigado pela ajuda", "Show, resolveu 👍",
    "Ótimo, obrigada pela atenção", "Beleza, obrigado", "Agradeço a atenção.", "Maravilha, muito obrigada 😊",
)
CUSTOMER_UNHAPPY: Texts = (
    "Ainda não resolveu...", "Sério que vou ter que esperar mais?", "Isso não resolve meu problema",
    "Vou aguardar, mas já estou cansado", "Ok... espero que resolvam dessa vez", "Que absurdo",
    "Tá bom né, fazer o quê", "Já é a segunda vez que me dizem isso",
)
CUSTOMER_BOT_GIVEUP: Texts = ("não era isso", "esquece", "deixa pra lá", "ok")

BOT_GREETINGS: Texts = (
    "Olá! Eu sou a Tina 🤖, assistente virtual da Atende. Como posso ajudar?\n1️⃣ Faturas e pagamentos\n"
    "2️⃣ Pedidos, entregas e trocas\n3️⃣ Suporte técnico\n4️⃣ Minha conta\n5️⃣ Falar com um atendente",
    "Oi! Sou o assistente virtual da Atende 🤖. Digite o número da opção desejada:\n1 - Segunda via e pagamentos\n"
    "2 - Acompanhar pedido\n3 - Suporte técnico\n4 - Cadastro\n5 - Outros assuntos",
    "Olá, bem-vindo(a) à Atende! Eu sou a Tina, sua assistente virtual 🤖. Em que posso ajudar hoje?",
)
BOT_ANSWERS: Mapping[str, Texts] = MappingProxyType({
    "billing": ("Para emitir a 2ª via da fatura, acesse o app > Minha conta > Faturas. Posso ajudar em algo mais?",
                "Pagamentos via boleto levam até 3 dias úteis para serem compensados. Posso ajudar em algo mais?"),
    "delivery": ("Você pode acompanhar seu pedido em atende.com.br/rastreio com o número do pedido. Isso ajudou?",
                 "Encontrei seu pedido! Ele está em rota de entrega e deve chegar em até 2 dias úteis. Isso ajudou?"),
    "technical": ("Tente reiniciar o aparelho e atualizar o aplicativo para a versão mais recente. Isso resolveu?",
                  "Confira nosso passo a passo em atende.com.br/ajuda/suporte. Isso resolveu?"),
    "cancellation": ("Pedidos ainda não faturados podem ser cancelados em Meus pedidos > Cancelar. Isso ajudou?",),
    "product_info": ("Todos os produtos têm garantia de 12 meses pelo fabricante. Posso ajudar em algo mais?",
                     "As informações técnicas estão na página do produto, na aba Especificações. Isso ajudou?"),
    "account": ("Para redefinir sua senha, clique em Esqueci minha senha na tela de login. Posso ajudar em algo mais?",
                "Você pode alterar seus dados em Minha conta > Cadastro. Isso ajudou?"),
    "complaint": ("Sinto muito pelo ocorrido. Para registrar sua reclamação, vou precisar de alguns dados. Isso ajudou?",),
    "returns": ("Trocas e devoluções podem ser solicitadas em até 7 dias após o recebimento, em Meus pedidos. Isso ajudou?",),
})
BOT_RESOLVED: Texts = (
    "Que bom que consegui ajudar! 😊 A Atende agradece o contato.",
    "Fico feliz em ajudar! Se precisar, é só chamar. Até logo! 🤖",
    "Atendimento encerrado. Obrigado por falar com a assistente virtual da Atende!",
)
BOT_HANDOFF: Texts = (
    "Vou transferir você para um de nossos atendentes. Por favor, aguarde um instante.",
    "Certo! Estou transferindo sua conversa para um atendente humano. O tempo médio de espera é de 5 minutos.",
    "Entendi. Um especialista vai continuar o seu atendimento em instantes. 🤖",
)
BOT_SORRY: Texts = ("Desculpe, não entendi. Pode reformular?", "Hmm, não consegui entender. Pode escolher uma das opções?")

AGENT_OPENERS: Mapping[str, Texts] = MappingProxyType({
    "formal": (
        "Prezado(a) {nome}, agradecemos o seu contato. Meu nome é {agente} e darei continuidade ao seu atendimento.",
        "Bom dia, Sr(a). {nome}. Agradecemos por entrar em contato com a Atende.",
        "Prezado(a) cliente, seja bem-vindo(a) ao atendimento da Atende. Sou {agente}, em que posso auxiliá-lo(a)?",
    ),
    "friendly": (
        "Oi, {nome}! Tudo bem? 😊 Aqui é a {agente}, vou te ajudar!",
        "Olá, {nome}! Que bom falar com você! Sou {agente} e já vou dar uma olhada aqui 😉",
        "Oii, {nome}! {agente} por aqui, bora resolver isso juntos? 🙌",
    ),
    "empathetic": (
        "Olá, {nome}. Sinto muito pelo transtorno, entendo como isso é chato. Sou {agente} e vou cuidar do seu caso.",
        "{nome}, imagino como deve ser frustrante passar por isso. Pode contar comigo, sou {agente}.",
        "Oi, {nome}. Lamento muito pelo ocorrido e entendo perfeitamente a sua preocupação. Vou te ajudar.",
    ),
    "concise": (
        "{nome}, verificando.",
        "Olá. {agente}. Vou verificar.",
        "Certo, {nome}. Um momento.",
    ),
})
AGENT_ASK_INFO: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Poderia, por gentileza, informar o número do pedido?",
               "Solicito, por gentileza, a confirmação dos dados para prosseguirmos com a análise."),
    "friendly": ("Me passa o número do pedido rapidinho? 😊", "Me conta mais um pouquinho pra eu te ajudar melhor?"),
    "empathetic": ("Para eu conseguir resolver o quanto antes, você pode me informar o número do pedido?",
                   "Entendo. Pode me contar um pouco mais para eu te ajudar da melhor forma?"),
    "concise": ("Número do pedido?", "Detalhes, por favor."),
})
FACTS_RESOLVED: Mapping[str, Texts] = MappingProxyType({
    "billing": ("a cobrança em duplicidade foi estornada e o valor volta na próxima fatura",
                "a segunda via do boleto foi enviada para o seu e-mail cadastrado",
                "o pagamento foi localizado e a pendência já foi baixada no sistema",
                "a fatura foi corrigida e a nova versão já está disponível no app"),
    "delivery": ("o pedido saiu para entrega hoje e chega até as 18h",
                 "a transportadora confirmou nova tentativa de entrega para amanhã",
                 "o endereço de entrega foi atualizado com sucesso",
                 "abrimos a reentrega sem custo e o novo prazo é de 2 dias úteis"),
    "technical": ("o acesso foi restabelecido e o app já deve funcionar normalmente",
                  "agendamos a visita técnica para amanhã no período da manhã",
                  "a troca do aparelho foi aprovada e o envio sai em 24h",
                  "a atualização corrige o problema; basta reinstalar o aplicativo"),
    "cancellation": ("o cancelamento foi concluído e o estorno cai em até 5 dias úteis",
                     "o pedido foi cancelado sem custo",
                     "consegui um desconto de 30% nos próximos 3 meses para você continuar conosco"),
    "product_info": ("o produto tem 12 meses de garantia do fabricante e é bivolt",
                     "a nova remessa chega ao estoque na próxima semana",
                     "é possível parcelar em até 10x sem juros no cartão",
                     "o modelo está disponível nas cores preta, branca e azul"),
    "account": ("a senha foi redefinida e o link de acesso foi enviado por SMS",
                "o e-mail do cadastro foi atualizado",
                "a conta foi desbloqueada",
                "o seu e-mail foi removido das comunicações de marketing"),
    "complaint": ("registramos a sua reclamação e o reembolso integral foi aprovado",
                  "o caso foi resolvido e aplicamos um cupom de R$ 50 como compensação",
                  "o supervisor revisou o caso e a solução foi aplicada hoje"),
    "returns": ("a coleta do produto foi agendada e o reembolso sai após a conferência",
                "o código de postagem para a devolução foi enviado por e-mail",
                "a troca foi aprovada e o novo produto será enviado em até 3 dias úteis"),
})
FACTS_PENDING: Mapping[str, Texts] = MappingProxyType({
    "billing": ("abri a solicitação {protocolo} para a área financeira, com retorno em até 5 dias úteis",
                "o caso foi encaminhado ao financeiro sob o protocolo {protocolo}"),
    "delivery": ("abri uma ocorrência com a transportadora, protocolo {protocolo}, com retorno em até 48h",
                 "o pedido está em análise pela logística sob o protocolo {protocolo}"),
    "technical": ("encaminhei o caso à equipe técnica, protocolo {protocolo}",
                  "será necessário enviar o aparelho para a assistência; o protocolo é {protocolo}"),
    "cancellation": ("o cancelamento depende da análise do setor responsável, protocolo {protocolo}",),
    "product_info": ("vou confirmar a informação com o fornecedor e retorno em breve, protocolo {protocolo}",),
    "account": ("a alteração precisa de validação de segurança e foi registrada no protocolo {protocolo}",),
    "complaint": ("a reclamação foi registrada na ouvidoria sob o protocolo {protocolo}, com retorno em até 10 dias",
                  "encaminhei ao supervisor, protocolo {protocolo}"),
    "returns": ("a devolução está em análise pelo centro de distribuição, protocolo {protocolo}",),
})
WRAP_RESOLVED: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Informamos que {fato}.", "Conforme verificado, {fato}.", "Comunicamos que {fato}, conforme solicitado."),
    "friendly": ("Prontinho! {Fato} 🙌", "Boa notícia: {fato}! 😉", "Resolvido, viu? {Fato} 😄"),
    "empathetic": ("Obrigada pela paciência. {Fato}, e peço desculpas pelo incômodo.",
                   "Entendo perfeitamente. Já cuidei disso: {fato}.",
                   "Sei o quanto isso foi desgastante. Fique tranquilo(a): {fato}."),
    "concise": ("{Fato}.", "Feito: {fato}.", "Resolvido: {fato}."),
})
WRAP_PENDING: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Informamos que {fato}. Solicitamos, por gentileza, que aguarde o retorno.",
               "Comunicamos que {fato}."),
    "friendly": ("Olha, ainda não consegui resolver por aqui, mas {fato}, tá? 😊",
                 "Já deixei tudo encaminhado: {fato}! Qualquer novidade te aviso 😉"),
    "empathetic": ("Sinto muito por não conseguir resolver agora. {Fato}, e vou acompanhar de perto.",
                   "Entendo sua frustração e lamento a demora. {Fato}."),
    "concise": ("{Fato}.", "Pendente: {fato}."),
})
AGENT_CLOSERS: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Permanecemos à disposição. Atenciosamente, {agente}.", "A Atende agradece o seu contato. Tenha um bom dia.",
               "Caso necessite, estamos à inteira disposição. Cordialmente, {agente}."),
    "friendly": ("Qualquer coisa é só chamar, tá? Um abraço! 😊", "Foi um prazer te ajudar! Tenha um ótimo dia! 😄",
                 "Valeu pelo contato, {nome}! Até a próxima! 👋"),
    "empathetic": ("Sinto muito mais uma vez pelo ocorrido. Conte sempre comigo.",
                   "Espero que fique tudo bem. Estou aqui se precisar.",
                   "Obrigada pela compreensão, {nome}. Cuide-se!"),
    "concise": ("Algo mais?", "Atendimento encerrado.", "Disponível se precisar."),
})

EMAIL_SUBJECTS: Mapping[str, Texts] = MappingProxyType({
    "billing": ("Cobrança indevida na fatura", "Segunda via do boleto", "Valor cobrado em duplicidade",
                "Dúvida sobre fatura de {mes}"),
    "delivery": ("Pedido {pedido} não entregue", "Atraso na entrega", "Status do meu pedido"),
    "technical": ("Problema com {o_produto}", "Aplicativo não funciona", "Defeito no produto"),
    "cancellation": ("Cancelamento do pedido {pedido}", "Solicitação de cancelamento"),
    "product_info": ("Dúvida sobre {o_produto}", "Informações sobre produto"),
    "account": ("Alteração de cadastro", "Não consigo acessar minha conta"),
    "complaint": ("Reclamação", "RECLAMAÇÃO - atendimento", "Insatisfação com o serviço"),
    "returns": ("Troca {do_produto}", "Devolução do pedido {pedido}"),
})
EMAIL_CUSTOMER_GREETINGS: Texts = ("Olá,", "Boa tarde,", "Bom dia.", "Prezados,", "Oi,", "")
EMAIL_CUSTOMER_SIGNOFFS: Texts = ("Obrigado,", "Aguardo retorno.", "Att,", "Atenciosamente,", "Obrigada!", "Grata,")
EMAIL_MOBILE_FOOTERS: Texts = ("Enviado do meu iPhone", "Enviado do meu smartphone Samsung Galaxy", "Enviado pelo Outlook para Android")
AGENT_SIGNATURES: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Atenciosamente,\n{agente}\nCentral de Relacionamento Atende\natende.com.br",),
    "friendly": ("Um abraço!\n{primeiro} 😊\nTime Atende",),
    "empathetic": ("Conte comigo,\n{agente}\nEquipe de Atendimento Atende",),
    "concise": ("{primeiro} - Atendimento Atende",),
})
AUTO_ACK = ("Recebemos a sua mensagem e o protocolo {protocolo} foi aberto. Responderemos em até 48 horas úteis.\n\n"
            "Esta é uma mensagem automática, por favor não responda.")

SURVEY_COMMENTS_GOOD: Texts = (
    "Atendimento excelente, resolveram rápido", "Atendente muito educada e atenciosa", "Gostei, foi tudo bem explicado",
    "Resolveu meu problema", "Nota 10", "Rápido e eficiente", "Muito bom!",
)
SURVEY_COMMENTS_BAD: Texts = (
    "Demorou demais", "Não resolveram meu problema", "Tive que explicar tudo de novo", "Péssimo",
    "Fiquei muito tempo esperando", "Ninguém sabe informar nada", "Vou trocar de empresa",
)
SURVEY_COMMENTS_NEUTRAL: Texts = ("Ok", "Razoável", "Poderia ser mais rápido", "Normal", "Atendeu, mas demorou um pouco")
# What people write when the tone they got was not the one they like
SURVEY_COMMENTS_TONE: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Muito robotizado, parecia que eu estava falando com uma máquina", "Atendimento frio e burocrático"),
    "friendly": ("Informal demais para o meu gosto", "Achei a atendente íntima demais, cheia de emojis"),
    "empathetic": ("Muita conversa e pouca solução", "Não precisava de tanto blá-blá-blá, só queria resolver"),
    "concise": ("Atendente seco, sem paciência nenhuma", "Respostas curtas demais, me senti ignorado"),
})
SURVEY_COMMENTS_TONE_MATCH: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Atendimento muito profissional e respeitoso", "Cordialidade impecável"),
    "friendly": ("Atendente super simpática, adorei!", "Muito leve e divertido o atendimento 😄"),
    "empathetic": ("Me senti acolhida, obrigada pela paciência", "Atendente muito humana e compreensiva"),
    "concise": ("Direto ao ponto, do jeito que eu gosto", "Objetivo e rápido, perfeito"),
})

_CASUAL = (("você", "vc"), ("porque", "pq"), ("também", "tb"), ("não", "nao"), ("está", "tá"), ("para", "pra"),
           ("por favor", "pfv"), ("quando", "qdo"), ("obrigado", "obg"), ("beleza", "blz"))
_EMOJIS = ("😡", "😤", "🙏", "😕", "😢", "🤔", "😅", "😩")


def pick(rnd: random.Random, options: Sequence[str]) -> str:
    return options[rnd.randrange(len(options))]


def casualise(text: str, rnd: random.Random, level: float) -> str:
    """Messaging-app writing: abbreviations, dropped accents and punctuation, lower case, emojis."""
    if rnd.random() >= level:
        return text
    for formal, casual in _CASUAL:
        if formal in text and rnd.random() < 0.6:
            text = text.replace(formal, casual)
    if rnd.random() < 0.5:
        text = text[:1].lower() + text[1:]
    if rnd.random() < 0.5:
        text = text.rstrip(".!")
    if rnd.random() < 0.15:
        text = text + " " + pick(rnd, _EMOJIS)
    if rnd.random() < 0.08:
        text = text.upper()
    return text


def capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]

EMAIL_AGENT_OPENERS: Mapping[str, Texts] = MappingProxyType({
    "formal": ("Prezado(a) Sr(a). {nome},\n\nAgradecemos o seu contato.",
               "Prezado(a) {nome},\n\nEm atenção à sua mensagem, seguem as informações solicitadas."),
    "friendly": ("Oi, {nome}! Tudo bem? 😊\n\nObrigada por escrever pra gente!",
                 "Olá, {nome}!\n\nQue bom receber sua mensagem! Já dei uma olhada no seu caso 😉"),
    "empathetic": ("Olá, {nome}.\n\nSinto muito pelo transtorno e agradeço por nos contar o que aconteceu.",
                   "Olá, {nome}.\n\nEntendo perfeitamente a sua preocupação e lamento pelo ocorrido."),
    "concise": ("{nome},", "Olá, {nome}."),
})
EMAIL_CUSTOMER_REPLIES_OK: Texts = (
    "Obrigado pelo retorno, deu tudo certo.", "Perfeito, muito obrigada!", "Recebi, obrigado.",
    "Ok, agradeço a atenção.",
)
EMAIL_CUSTOMER_REPLIES_BAD: Texts = (
    "Continuo sem solução. Já faz dias que aguardo.", "Isso não resolve o meu problema, preciso de uma resposta concreta.",
    "Até agora nada. Vou ter que procurar o Procon?", "Ainda não recebi o que foi prometido.",
)

# head nouns of product names that take the feminine article ("a Geladeira", "uma Smart TV")
_FEMININE_HEADS = frozenset((
    "Geladeira", "Máquina", "Smart", "Caixa", "Cafeteira", "Air", "Bicicleta", "Esteira", "Boneca", "Pista",
    "Jaqueta", "Mochila", "Calça", "Camiseta", "Capa", "Película", "Impressora", "Webcam", "Prancha", "Escova",
    "Cama", "Coleira", "Ração", "Luminária", "Cortina", "Barraca", "Bola", "Cadeira", "Soundbar", "Toalha",
))
_DANGLING = frozenset(("de", "da", "do", "para", "com", "e", "-"))


def product_slots(name: str) -> dict[str, str]:
    """How customers refer to a product: a short name with the right article and gender."""
    words = name.split()[:3]
    while len(words) > 1 and words[-1] in _DANGLING:
        words.pop()
    short = " ".join(words).rstrip('"')
    feminine = words[0] in _FEMININE_HEADS
    o, um, meu, do = ("a", "uma", "minha", "da") if feminine else ("o", "um", "meu", "do")
    return {
        "produto": short, "o_produto": f"{o} {short}", "O_produto": f"{o.upper()} {short}",
        "um_produto": f"{um} {short}", "meu_produto": f"{meu} {short}", "Meu_produto": f"{capitalise(meu)} {short}",
        "do_produto": f"{do} {short}",
    }
