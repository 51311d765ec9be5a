#!/usr/bin/env python3
"""Writes bench/semantic/pairs.tsv: labelled pairs of support/FAQ-style
questions for measuring a semantic cache's false hits.

label 1 = the two questions ask the same thing (a cached answer to one is a
correct answer to the other); label 0 = they look alike but need different
answers (a hit would be a false hit). Every pair is labelled by construction:
a paraphrase is made by a meaning-keeping rewrite (how do I <-> how can I,
what's <-> what is, politeness, reordered clauses, synonyms); a hard negative
by one answer-changing edit (a number, an operator, a negation, a name, an
identifier, code, an antonym, an added or dropped clause, a different
object).

Deterministic: standard library only, a fixed seed; rerun to regenerate the
same file:  python3 bench/semantic/make_pairs.py
Licence: Apache-2.0, like the rest of tokenwarden (see README.md here).
"""

import random
import sys
from pathlib import Path

SEED = 19
NEG_PER_KIND = 450
POS_PER_KIND = 250

# --- vocabulary -----------------------------------------------------------

OBJECTS = [
    "password", "email address", "phone number", "billing address", "payment method",
    "profile picture", "username", "subscription", "invoice", "shipping address",
    "credit card", "display name", "time zone", "language setting", "API key",
    "team name", "workspace", "project", "backup", "webhook", "support ticket",
    "order", "account", "plan", "license", "report", "dashboard", "calendar",
    "signature", "avatar", "recovery email", "security question", "delivery date",
]

ACTIONS = [
    "reset my password", "change my email address", "update my payment method",
    "cancel my subscription", "delete my account", "download my invoice",
    "export my data", "add a team member", "remove a team member", "upgrade my plan",
    "change my username", "update my billing address", "set up two-factor authentication",
    "contact customer support", "track my order", "return an item", "change my delivery date",
    "merge two accounts", "transfer my license", "rename my workspace",
    "invite a guest user", "change my time zone", "update my profile picture",
    "generate an API key", "create a new project", "archive a project",
    "schedule a report", "restore a backup", "verify my phone number",
    "change the language", "edit my signature", "find my order history",
    "apply a coupon code", "change my shipping address", "request a refund",
    "view my billing history", "change my display name", "set a spending limit",
    "connect my calendar", "print a receipt",
]

CONTEXTS = [
    "on the mobile app", "from the web dashboard", "on my phone", "from my laptop",
    "in the settings page", "on the admin console", "for my whole team",
    "in the new interface", "on the desktop app", "from the account page",
]

SYNONYMS = [
    ("change", "update"), ("delete", "remove"), ("find", "locate"), ("view", "see"),
    ("contact", "reach"), ("cancel", "terminate"), ("create", "make"), ("edit", "modify"),
    ("request", "ask for"), ("track", "follow"), ("download", "save"), ("set up", "configure"),
]

COMPANIES = ["Apple", "Google", "Microsoft", "Amazon", "Netflix", "Tesla", "Spotify", "Adobe",
             "Oracle", "Salesforce", "Shopify", "Stripe", "Uber", "Airbnb", "Nvidia", "Intel"]
SERVICES = ["Slack", "Zoom", "Dropbox", "Jira", "Trello", "Salesforce", "HubSpot", "Zendesk",
            "Notion", "Asana", "GitHub", "GitLab", "Outlook", "Gmail", "Teams", "Figma"]
COUNTRIES = ["Canada", "Mexico", "France", "Germany", "Japan", "Brazil", "India", "Spain",
             "Italy", "Norway", "Kenya", "Chile", "Poland", "Ireland", "Australia", "Egypt"]
LANGUAGES = ["French", "German", "Spanish", "Italian", "Japanese", "Korean", "Dutch",
             "Polish", "Swedish", "Turkish", "Greek", "Hindi"]
PLATFORMS = ["Windows", "Linux", "Android", "iOS", "macOS", "ChromeOS", "Ubuntu", "Debian"]
PEOPLE = ["Alice", "Bob", "Maria", "Kenji", "Priya", "Omar", "Sofia", "Liam", "Chen", "Fatima"]
FORMATS = ["json", "yaml", "csv", "xml", "pdf", "excel", "markdown", "html", "toml", "parquet"]
TOOLS_LC = ["postgres", "mysql", "redis", "mongodb", "sqlite", "kafka", "rabbitmq", "nginx"]
WORDS = ["hello", "goodbye", "thank you", "good morning", "see you soon", "welcome",
         "happy birthday", "good night", "excuse me", "how are you"]
ADJECTIVES = ["slow", "safe", "free", "secure", "available", "encrypted", "supported",
              "included", "required", "refundable", "compatible", "public", "stable", "expensive"]
PRODUCTS = ["Python", "the Pro plan", "the API", "the mobile app", "the free tier",
            "the desktop app", "the starter plan", "your service", "the beta", "the trial"]
NUMBER_WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                "eleven", "twelve", "fifteen", "twenty", "thirty", "fifty", "hundred"]

ANTONYMS = [
    ("enable", "disable"), ("increase", "decrease"), ("turn on", "turn off"),
    ("open", "close"), ("upload", "download"), ("import", "export"), ("add", "remove"),
    ("lock", "unlock"), ("start", "stop"), ("show", "hide"), ("allow", "block"),
    ("subscribe to", "unsubscribe from"), ("install", "uninstall"), ("upgrade", "downgrade"),
    ("connect", "disconnect"), ("log in to", "log out of"), ("activate", "deactivate"),
    ("encrypt", "decrypt"), ("pause", "resume"), ("accept", "decline"),
]
ANTONYM_OBJECTS = ["dark mode", "notifications", "auto-renewal", "my account", "the firewall",
                   "my profile", "sync", "email alerts", "the integration", "my subscription",
                   "the sidebar", "location sharing", "my card", "the beta features",
                   "cookies", "read receipts", "the newsletter", "my contacts", "the widget"]
# Opposite qualifiers, each with questions it makes sense in.
QUALIFIERS = [
    (("before", "after"), ["Can I cancel {q} the order ships?", "Can I get a refund {q} the trial ends?",
                           "Can I change my plan {q} the renewal date?", "Do I pay {q} delivery?"]),
    (("minimum", "maximum"), ["What is the {q} order size?", "What is the {q} number of seats?",
                              "What is the {q} upload size?", "What is the {q} password length?"]),
    (("min", "max"), ["What is the {q} order size?", "How do I set the {q} replicas?",
                      "What is the {q} file size?"]),
    (("higher", "lower"), ["Why is my bill {q} this month?", "Can I pick a {q} tier?",
                           "Why is the {q} plan recommended?"]),
    (("more", "less"), ["Why do I pay {q} with the annual plan?", "How do I use {q} storage?",
                        "Can I get {q} seats on the team plan?"]),
    (("first", "last"), ["Who was the {q} person to edit this file?", "When was my {q} payment?",
                         "How do I see the {q} page of the report?"]),
    (("earliest", "latest"), ["What is the {q} delivery date?", "When is the {q} I can cancel?",
                              "Which is the {q} version I can install?"]),
    (("cheapest", "most expensive"), ["Which plan is the {q}?", "What is the {q} shipping option?"]),
    (("public", "private"), ["How do I make my repository {q}?", "Is my profile {q} by default?"]),
    (("inbound", "outbound"), ["Where do I see {q} traffic?", "How do I set the {q} firewall rules?",
                               "Are {q} calls billed?"]),
    (("incoming", "outgoing"), ["Why are my {q} emails delayed?", "How do I block {q} calls?"]),
]

CLAUSES = [
    "and delete my account", "for someone else's account", "on behalf of my manager",
    "and keep my old data", "for a closed account", "while a payment is pending",
    "and get a refund", "if I forgot my username", "for all users at once",
    "after my account was suspended", "and move it to another workspace",
    "and notify my whole team", "in bulk", "from a deleted project",
]

CODE_SNIPPETS = [
    ("x = 1", "x = 2"), ("a == b", "a != b"), ("len(items) - 1", "len(items) + 1"),
    ("for i in range(10):", "for i in range(11):"), ("git reset --hard", "git reset --soft"),
    ("rm -rf build", "rm -rf dist"), ("SELECT * FROM users", "SELECT * FROM orders"),
    ("kubectl get pods", "kubectl delete pods"), ("chmod 644 file", "chmod 755 file"),
    ("list.sort()", "list.reverse()"), ("arr.push(x)", "arr.pop()"),
    ("return a && b", "return a || b"), ("let v = vec![]", "let v = Vec::new()"),
    ("npm install", "npm uninstall"), ("import numpy as np", "import pandas as pd"),
    ("if x > 0:", "if x >= 0:"), ("str.upper()", "str.lower()"),
    ("docker stop web", "docker rm web"), ("pip install -U requests", "pip install requests"),
    ("curl -X GET /users", "curl -X DELETE /users"),
]
CODE_TEMPLATES = [
    "What does `{c}` do?", "Why does `{c}` fail?", "Is `{c}` safe to run?",
    "Can you explain `{c}`?", "What is wrong with `{c}`?",
    "Explain this code:\n```\n{c}\n```", "Why does this error?\n```\n{c}\n```",
]

# --- helpers --------------------------------------------------------------


def cap(s):
    return s[:1].upper() + s[1:]


def style(rng, a, b, keep_case=False):
    """The same surface style on both sides: as written, or typed casually."""
    r = rng.random()
    if r < 0.2 and not keep_case:
        return a.lower().rstrip("?."), b.lower().rstrip("?.")
    if r < 0.3:
        return a.rstrip("?."), b.rstrip("?.")
    return a, b


def order_id(rng):
    return rng.randint(10000, 99999)


# --- hard negatives (label 0) ---------------------------------------------


def neg_number(rng):
    n = rng.randint(1, 500)
    m = n + rng.choice([1, 2, 10, -1, 100]) if n > 1 else n + 1
    i = rng.randint(0, len(NUMBER_WORDS) - 2)
    w1, w2 = NUMBER_WORDS[i], NUMBER_WORDS[i + 1 + rng.randint(0, len(NUMBER_WORDS) - i - 2)]
    o = order_id(rng)
    t = rng.choice([
        ("Can I add {} users to my plan?", n, m),
        ("How do I cancel order {}?", o, o + rng.choice([1, -1, 10])),
        ("Is there a discount for {} seats?", n, m),
        ("Can I get a refund after {} days?", n, m),
        ("What does the {} GB plan cost?", n, m),
        ("Where is my order {}?", o, o + 1),
        ("Can I add {} team members?", w1, w2),
        ("Do you offer {} free months?", w1, w2),
        ("Is shipping free for orders over ${}?", n, m),
        ("Can I split the payment into {} parts?", w1, w2),
        ("What happens after {} failed login attempts?", n, m),
        ("Can I store {}.5 TB of files?", n, m),
        ("Why was I charged ${}.99?", n, m),
        ("How do I return item {} from order {}?", None, None),
    ])
    if t[1] is None:
        x = rng.randint(1, 9)
        return (t[0].format(x, o), t[0].format(x + 1, o))
    return (t[0].format(t[1]), t[0].format(t[2]))


def neg_operator(rng):
    a, b = rng.randint(1, 99), rng.randint(1, 99)
    ops = ["+", "-", "*", "/"]
    o1 = rng.choice(ops)
    o2 = rng.choice([o for o in ops if o != o1])
    words = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}
    r = rng.random()
    if r < 0.35:
        return (f"What is {a}{o1}{b}?", f"What is {a}{o1}{b + rng.choice([1, 2, -1]) if b > 1 else b + 1}?")
    if r < 0.6:
        return (f"What is {a} {o1} {b}?", f"What is {a} {o2} {b}?")
    if r < 0.75:
        return (f"what is {a} {words[o1]} {b}", f"what is {a} {words[o2]} {b}")
    if r < 0.9:
        c1, c2 = rng.sample(["<", ">", "=", ">=", "<="], 2)
        return (f"Is x {c1} {a} true here?", f"Is x {c2} {a} true here?")
    return (f"What is {a} minus {b}?", f"What is {b} minus {a}?")


def neg_negation(rng):
    adj = rng.choice(ADJECTIVES)
    prod = rng.choice(PRODUCTS)
    act = rng.choice(ACTIONS)
    obj = rng.choice(OBJECTS)
    apos = rng.choice(["'", "\u2019", ""])
    t = rng.choice([
        (f"Is {prod} {adj}?", f"Is {prod} not {adj}?"),
        (f"Can I {act}?", f"Can I not {act}?"),
        (f"Why can I {act}?", f"Why can{apos}t I {act}?"),
        (f"Why does my {obj} update?", f"Why doesn{apos}t my {obj} update?"),
        (f"Do you ship to {rng.choice(COUNTRIES)}?", None),
        (f"Can I {act} with a credit card?", f"Can I {act} without a credit card?"),
        (f"I received my {obj}.", f"I never received my {obj}."),
        (f"Is there a fee to {act}?", f"Is there no fee to {act}?"),
        (f"Should I {act} now?", f"Should I not {act} now?"),
        (f"Does {prod} work offline?", f"Does {prod} not work offline?"),
        (f"Is {prod} {adj} for teams?", f"Isn{apos}t {prod} {adj} for teams?"),
        (f"I can {act}, why?", f"I cannot {act}, why?"),
        (f"Someone changed my {obj}.", f"Nobody changed my {obj}."),
    ])
    if t[1] is None:
        return (t[0], t[0].replace("Do you", f"Don{apos}t you"))
    return t


def neg_entity(rng):
    c1, c2 = rng.sample(COMPANIES, 2)
    s1, s2, s3 = rng.sample(SERVICES, 3)
    k1, k2 = rng.sample(COUNTRIES, 2)
    l1, l2 = rng.sample(LANGUAGES, 2)
    p1, p2 = rng.sample(PLATFORMS, 2)
    n1, n2 = rng.sample(PEOPLE, 2)
    w = rng.choice(WORDS)
    t = rng.choice([
        (f"Who is the CEO of {c1}?", f"Who is the CEO of {c2}?"),
        (f"How do I connect {s1} to my account?", f"How do I connect {s2} to my account?"),
        (f"Translate '{w}' to {l1}", f"Translate '{w}' to {l2}"),
        (f"Do you ship to {k1}?", f"Do you ship to {k2}?"),
        (f"Does the app run on {p1}?", f"Does the app run on {p2}?"),
        (f"How do I migrate from {s1} to {s2}?", f"How do I migrate from {s2} to {s1}?"),
        (f"Is {c1} bigger than {c2}?", f"Is {c2} bigger than {c1}?"),
        (f"Can {n1} approve my expense report?", f"Can {n2} approve my expense report?"),
        (f"Can I share the project with {n1}?", f"Can I share the project with {n2}?"),
        (f"What is the capital of {k1}?", f"What is the capital of {k2}?"),
        (f"Does {s1} integrate with {s2}?", f"Does {s1} integrate with {s3}?"),
        (f"How do I import contacts from {s1}?", f"How do I import contacts from {s2}?"),
    ])
    # A quarter typed in lower case: names are then only words (honest hard cases).
    if rng.random() < 0.25:
        return (t[0].lower(), t[1].lower())
    return t


def neg_identifier(rng):
    e = rng.randint(100, 9999)
    o = order_id(rng)
    v = (rng.randint(1, 9), rng.randint(0, 20), rng.randint(0, 20))
    n1, n2 = rng.sample(PEOPLE, 2)
    t = rng.choice([
        (f"What does error E{e} mean?", f"What does error E{e + 1} mean?"),
        (f"Where is ORD-{o}?", f"Where is ORD-{o + rng.choice([1, 2, 9])}?"),
        (f"Send the invoice to {n1.lower()}@example.com", f"Send the invoice to {n2.lower()}@example.com"),
        (f"Is https://status.example.com/{n1.lower()} down?", f"Is https://status.example.com/{n2.lower()} down?"),
        (f"How do I delete /var/log/{n1.lower()}.log?", f"How do I delete /var/log/{n2.lower()}.log?"),
        (f"What is the default value of MAX_{rng.choice(['RETRIES', 'USERS', 'SIZE'])}?", None),
        (f"What does getUser{n1} return?", f"What does getUser{n2} return?"),
        (f"Is version {v[0]}.{v[1]}.{v[2]} still supported?", f"Is version {v[0]}.{v[1]}.{v[2] + 1} still supported?"),
        (f"Why is ticket #{e} still open?", f"Why is ticket #{e + 1} still open?"),
        (f"What does the user_{n1.lower()} field store?", f"What does the user_{n2.lower()} field store?"),
        (f"Can I rename config.{rng.choice(FORMATS)}?", None),
        (f"How do I refund transaction TX-{o}-A?", f"How do I refund transaction TX-{o}-B?"),
    ])
    if t[1] is None:
        a = t[0]
        if "MAX_" in a:
            return (a, a.replace("MAX_", "MIN_"))
        f1, f2 = rng.sample(FORMATS, 2)
        return (f"Can I rename config.{f1}?", f"Can I rename config.{f2}?")
    return t


FUNCS = ["get_user", "parse", "load_config", "send_mail", "fetch", "save", "render", "connect"]
VARS = ["count", "total", "user", "items", "name", "limit", "offset", "timeout"]


def code_pair(rng):
    """A snippet and the same snippet with one token changed."""
    if rng.random() < 0.3:
        return rng.choice(CODE_SNIPPETS)
    f1, f2 = rng.sample(FUNCS, 2)
    v1, v2 = rng.sample(VARS, 2)
    n = rng.randint(0, 100)
    return rng.choice([
        (f"{v1} = {n}", f"{v1} = {n + 1}"),
        (f"{f1}({v1}, {v2})", f"{f1}({v2}, {v1})"),
        (f"{f1}({v1})", f"{f2}({v1})"),
        (f"{v1}.{f1}()", f"{v2}.{f1}()"),
        (f"time.sleep({n})", f"time.sleep({n + 5})"),
        (f"if {v1} > {n}: return", f"if {v1} < {n}: return"),
        (f"{v1} += {v2}", f"{v1} -= {v2}"),
        (f"SELECT {v1} FROM t LIMIT {n}", f"SELECT {v2} FROM t LIMIT {n}"),
        (f"{v1}[{n}]", f"{v1}[{n + 1}]"),
        (f"export {v1.upper()}=1", f"export {v2.upper()}=1"),
    ])


def neg_code(rng):
    c1, c2 = code_pair(rng)
    if rng.random() < 0.5:
        c1, c2 = c2, c1
    t = rng.choice(CODE_TEMPLATES)
    return (t.format(c=c1), t.format(c=c2))


def neg_antonym(rng):
    if rng.random() < 0.3:
        (q1, q2), templates = rng.choice(QUALIFIERS)
        t = rng.choice(templates)
        return (t.format(q=q1), t.format(q=q2))
    x, y = rng.choice(ANTONYMS)
    obj = rng.choice(ANTONYM_OBJECTS)
    ctx = rng.choice(CONTEXTS)
    t = rng.choice([
        "How do I {v} {o}?", "How do I {v} {o} {c}?", "Can I {v} {o}?",
        "Where do I go to {v} {o}?", "Is it possible to {v} {o} {c}?",
        "What happens if I {v} {o}?", "Why can I only {v} {o} {c}?",
    ])
    a = t.format(v=x, o=obj, c=ctx)
    b = t.format(v=y, o=obj, c=ctx)
    if rng.random() < 0.5:
        a, b = cap(a), cap(b)
    return (a, b)


def neg_clause(rng):
    act = rng.choice(ACTIONS)
    cl = rng.choice(CLAUSES)
    if set(act.split()[1:]) & set(cl.split()[1:]):
        return None  # "request a refund and get a refund" says one thing twice
    f1, f2 = rng.sample(FORMATS, 2)
    t = rng.choice([
        (f"How do I {act}?", f"How do I {act} {cl}?"),
        (f"Can I {act}?", f"Can I {act} {cl}?"),
        (f"How do I export my data as {f1}?", "How do I export my data?"),
        (f"How do I convert {f1} to {f2}?", f"How do I convert {f2} to {f1}?"),
        ("Can I get a refund for the annual plan?", "Can I get a refund?"),
        ("Is {} faster than {}?".format(*rng.sample(TOOLS_LC, 2)), None),
    ])
    if t[1] is None:
        a = t[0]
        words = a[3:-1].split(" faster than ")
        return (a, f"Is {words[1]} faster than {words[0]}?")
    return t


def neg_object(rng):
    """The same question about a different thing (no guard-specific edit)."""
    o1, o2 = rng.sample(OBJECTS, 2)
    t = rng.choice([
        "How do I reset my {}?", "How do I change my {}?", "Where can I find my {}?",
        "Why can I see the old {}?", "Can I share my {} with my team?",
        "How do I update the {}?", "Who can edit the {}?",
    ])
    return (t.format(o1), t.format(o2))


NEGATIVES = {
    "number": neg_number, "operator": neg_operator, "negation": neg_negation,
    "entity": neg_entity, "identifier": neg_identifier, "code": neg_code,
    "antonym": neg_antonym, "clause": neg_clause, "object": neg_object,
}

# --- paraphrases (label 1) ------------------------------------------------


def pos_howdo(rng):
    act = rng.choice(ACTIONS)
    forms = ["How do I {}?", "How can I {}?", "How should I {}?", "How would I {}?",
             "What's the way to {}?", "How do you {}?"]
    a, b = rng.sample(forms, 2)
    return style(rng, a.format(act), b.format(act))


def pos_whats(rng):
    obj = rng.choice(OBJECTS)
    c = rng.choice(COMPANIES)
    k = rng.choice(COUNTRIES)
    t = rng.choice([
        (f"What is the price of the Pro plan?", f"What's the price of the Pro plan?"),
        (f"What is my {obj}?", f"What's my {obj}?"),
        (f"What is the capital of {k}?", f"What's the capital city of {k}?"),
        (f"Who is the CEO of {c}?", f"Who's the CEO of {c}?"),
        (f"Where is my {obj}?", f"Where's my {obj}?"),
        (f"What is the status of my {obj}?", f"What's the status of my {obj}?"),
        (f"What is the limit on {rng.choice(OBJECTS)}s?", None),
    ])
    if t[1] is None:
        return style(rng, t[0], t[0].replace("What is", "What's"))
    return style(rng, t[0], t[1], keep_case=True)


def pos_polite(rng):
    act = rng.choice(ACTIONS)
    forms = ["How do I {}?", "Could you tell me how to {}?", "Please tell me how to {}.",
             "Hi, how do I {}? Thanks!", "Can you tell me how to {}?",
             "I'd like to know how to {}.", "Hello! How can I {}?",
             "I want to {}. How?", "Would you tell me how to {}, please?"]
    a, b = rng.sample(forms, 2)
    return style(rng, a.format(act), b.format(act))


def pos_reorder(rng):
    act = rng.choice(ACTIONS)
    ctx = rng.choice(CONTEXTS)
    forms = ["How do I {a} {c}?", "{C}, how do I {a}?", "How can I {a} {c}?", "{C}, how can I {a}?"]
    a, b = rng.sample(forms, 2)
    return style(rng, a.format(a=act, c=ctx, C=cap(ctx)), b.format(a=act, c=ctx, C=cap(ctx)))


def pos_synonym(rng):
    for _ in range(100):
        act = rng.choice(ACTIONS)
        pairs = [(x, y) for x, y in SYNONYMS if act.startswith(x + " ") or act.startswith(y + " ")]
        if pairs:
            x, y = rng.choice(pairs)
            if act.startswith(y + " "):
                x, y = y, x
            other = y + act[len(x):]
            form = rng.choice(["How do I {}?", "How can I {}?", "Where do I {}?"])
            if rng.random() < 0.5:
                ctx = rng.choice(CONTEXTS)
                act, other = f"{act} {ctx}", f"{other} {ctx}"
            return style(rng, form.format(act), form.format(other))
    return None


def pos_contraction(rng):
    act = rng.choice(ACTIONS)
    obj = rng.choice(OBJECTS)
    apos = rng.choice(["'", "\u2019", ""])
    t = rng.choice([
        (f"Why can't I {act}?", f"Why can{apos}t I {act}?"),
        (f"Why can't I {act}?", f"Why cannot I {act}?"),
        (f"Why doesn't my {obj} update?", f"Why does my {obj} not update?"),
        (f"I don't see my {obj}.", f"I do not see my {obj}."),
        (f"What's wrong with my {obj}?", f"What is wrong with my {obj}?"),
        (f"I'm trying to {act}.", f"I am trying to {act}."),
    ])
    return style(rng, t[0], t[1])


POSITIVES = {
    "howdo": pos_howdo, "whats": pos_whats, "polite": pos_polite,
    "reorder": pos_reorder, "synonym": pos_synonym, "contraction": pos_contraction,
}


def generate():
    rng = random.Random(SEED)
    rows, seen = [], set()

    def add(label, kind, make, want):
        made, attempts = 0, 0
        while made < want and attempts < want * 50:
            attempts += 1
            pair = make(rng)
            if pair is None:
                continue
            a, b = pair
            if a == b or (a, b) in seen or (b, a) in seen:
                continue
            if rng.random() < 0.5:
                a, b = b, a
            seen.add((a, b))
            rows.append((label, kind, a, b))
            made += 1
        if made < want:
            sys.exit(f"{kind}: only {made} distinct pairs of {want}")

    for kind, make in NEGATIVES.items():
        add(0, kind, make, NEG_PER_KIND)
    for kind, make in POSITIVES.items():
        add(1, kind, make, POS_PER_KIND)
    return rows


def main():
    out = Path(__file__).resolve().parent / "pairs.tsv"
    rows = generate()
    with out.open("w", encoding="utf-8", newline="\n") as f:
        f.write("label\tkind\ta\tb\n")
        for label, kind, a, b in rows:
            esc = lambda s: s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            f.write(f"{label}\t{kind}\t{esc(a)}\t{esc(b)}\n")
    neg = sum(1 for r in rows if r[0] == 0)
    print(f"wrote {out}: {len(rows)} pairs, {neg} negatives, {len(rows) - neg} paraphrases")


if __name__ == "__main__":
    main()
