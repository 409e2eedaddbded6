#!/usr/bin/env python3
"""Renders chat templates with transformers and commits what they produce, which
tests/test_chat_template.c requires loader/chat_template.c to reproduce byte for byte.

  tests/fixtures/chat_templates/cases.json  templates (the real ones in ../shared/tokenizers and
      tests/fixtures/models, plus the well-known Llama-2, Mistral v0.1/v0.3, ChatML, Zephyr,
      Phi-3 and Llama-3.1 shapes written below) x conversations x add_generation_prompt:
      the expected text, or the error the template raises
  tests/fixtures/chat_templates/expr.json   small templates over the expression language,
      whitespace control and filters, with their output or error

Every case goes through transformers' own render function (render_jinja_template), so the Jinja
environment (trim_blocks, lstrip_blocks, raise_exception, tojson, namespace, ...) is the one
apply_chat_template uses; for the real tokenizers the script also checks that
tokenizer.apply_chat_template gives the same text.

Needs (PyPI): transformers==5.24 (with its dependency Jinja2==3.1.6), tokenizers.
    /tmp/lmenv/bin/python tools/make_chat_template_reference.py
"""
import json, os, sys

from transformers import PreTrainedTokenizerFast
from transformers.utils.chat_template_utils import render_jinja_template

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "chat_templates")
SHARED = os.path.join(ROOT, "..", "shared", "tokenizers")

LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}"
    "{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

MISTRAL_V01 = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
)

MISTRAL_V03 = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS] [" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message.tool_calls is defined and message.tool_calls is not none %}
        {{- "[TOOL_CALLS] [" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS] {"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] "
    "+ '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ZEPHYR = """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

PHI3 = (
    "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\\n' + message['content'] "
    "+ '<|end|>\\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\\n' + message['content'] + '<|end|>\\n'}}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)

LLAMA31 = """{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\\n\\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\\n\\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\\n\\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\\n\\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\\n\\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\\n\\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

WRITTEN = [
    ("llama2-chat", LLAMA2, "<s>", "</s>"),
    ("mistral-v0.1-instruct", MISTRAL_V01, "<s>", "</s>"),
    ("mistral-v0.3-instruct", MISTRAL_V03, "<s>", "</s>"),
    ("chatml", CHATML, "", "<|im_end|>"),
    ("zephyr", ZEPHYR, "<s>", "</s>"),
    ("phi3", PHI3, "<s>", "<|endoftext|>"),
    ("llama3.1-instruct", LLAMA31, "<|begin_of_text|>", "<|eot_id|>"),
]


def M(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


CONVERSATIONS = [
    ("system+user", M(("system", "You are a helpful assistant."), ("user", "What is 2+2?"))),
    ("user only", M(("user", "Hello!"))),
    ("multi-turn", M(("user", "Hi"), ("assistant", "Hello, how can I help?"), ("user", "Tell me a joke."))),
    ("system multi-turn ending with assistant",
     M(("system", "Be brief."), ("user", "Capital of France?"), ("assistant", "Paris."))),
    ("unicode", M(("user", "héllo wörld — 世界 🎉 naïve café"), ("assistant", "Ça va ? ✓"))),
    ("newlines and tabs", M(("user", "line one\nline two\n\n\tindented\r\nend\n"))),
    ("quotes and backslashes", M(("user", "He said \"hi\" and 'bye' \\n not a newline {{ x }} {% if %}"))),
    ("leading and trailing spaces", M(("system", "  sys  "), ("user", "   padded   "), ("assistant", "\n answer \n"),
                                      ("user", " \t next\n"))),
    ("empty content", M(("user", ""), ("assistant", ""), ("user", ""))),
    ("roles not alternating", M(("user", "one"), ("user", "two"))),
    ("assistant first", M(("assistant", "I start."), ("user", "ok"))),
    ("thinking", M(("user", "Why?"), ("assistant", "<think>\nbecause\n</think>\n\nIt is so."),
                   ("user", "And then?"))),
    ("tool result", M(("user", "Weather?"), ("assistant", "Let me check."), ("tool", "sunny"),
                      ("tool", "22C"), ("user", "Thanks"))),
    ("system only", M(("system", "Only a system prompt."))),
    ("empty conversation", []),
]


def render(template, messages, agp, bos, eos):
    try:
        out, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                       add_generation_prompt=agp, bos_token=bos, eos_token=eos)
        return {"output": out[0]}
    except Exception as e:  # the expected error is part of the fixture
        return {"error_type": type(e).__name__, "error": str(e)}


def real_templates():
    found = []
    for name in ("llama2", "llama3", "qwen3", "gemma3", "gpt2"):
        d = os.path.join(SHARED, name)
        if os.path.exists(os.path.join(d, "tokenizer_config.json")):
            found.append(("shared/" + name, d))
    models = os.path.join(ROOT, "tests", "fixtures", "models")
    for name in sorted(os.listdir(models)):
        found.append(("models/" + name, os.path.join(models, name)))
    out = []
    for label, d in found:
        with open(os.path.join(d, "tokenizer_config.json"), encoding="utf-8") as f:
            cfg = json.load(f)
        tpl = cfg.get("chat_template")
        if not isinstance(tpl, str):
            continue

        def tok_str(v):
            return v.get("content", "") if isinstance(v, dict) else (v or "")

        out.append((label, tpl, tok_str(cfg.get("bos_token")), tok_str(cfg.get("eos_token")), d))
    return out


_TOKENIZERS = {}


def check_with_tokenizer(d, template, messages, agp, expected):
    if not messages:
        return  # apply_chat_template refuses an empty conversation before rendering
    tok = _TOKENIZERS.get(d) or _TOKENIZERS.setdefault(d, PreTrainedTokenizerFast.from_pretrained(d))
    try:
        got = tok.apply_chat_template(messages, chat_template=template, tokenize=False, add_generation_prompt=agp)
    except Exception as e:
        got = {"error": str(e)}
    want = expected.get("output", {"error": expected.get("error")})
    if got != want:
        sys.exit(f"{d}: apply_chat_template differs from render_jinja_template: {got!r} vs {want!r}")


# Small templates over the language itself; rendered with the messages and vars below.
EXPR_MESSAGES = M(("system", "Sys"), ("user", "  Hi there  "), ("assistant", "Yo"))
EXPRS = [
    # literals and arithmetic
    "{{ 1 + 2 * 3 }}|{{ (1 + 2) * 3 }}|{{ 7 // 2 }}|{{ -7 // 2 }}|{{ 7 % 3 }}|{{ -7 % 3 }}|{{ 7 / 2 }}|{{ 6 / 3 }}",
    "{{ 2 ** 10 }}|{{ 1.5 + 1 }}|{{ 0.1 + 0.2 }}|{{ 1e3 }}|{{ -3 }}|{{ +4 }}|{{ 10 - 2 - 3 }}|{{ 1_000 }}|{{ 0x1F }}",
    "{{ 'a' ~ 1 ~ none ~ true }}|{{ 'ab' * 3 }}|{{ [1, 2] + [3] }}|{{ 'x' + \"y\" }}|{{ 'con' 'cat' }}",
    "{{ none }}|{{ true }}|{{ false }}|{{ True }}|{{ None }}|{{ [1, 'a', none, true, 2.5] }}|{{ {'k': 'v', 'n': 1} }}",
    "{{ ('a', 1) }}|{{ (1,) }}|{{ [] }}|{{ {} }}|{{ ['it\\'s', \"q\\\"\"] }}",
    "{{ 'tab\\there' }}|{{ 'nl\\nx' }}|{{ '\\u00e9\\x41' }}|{{ 'back\\\\slash' }}|{{ 'odd\\q' }}",
    # comparisons and logic
    "{{ 1 < 2 }}|{{ 2 <= 1 }}|{{ 'a' < 'b' }}|{{ 1 == 1.0 }}|{{ true == 1 }}|{{ 'a' != 'a' }}|{{ 1 < 2 < 3 }}|{{ 3 > 2 > 2 }}",
    "{{ 'b' in 'abc' }}|{{ 'z' not in 'abc' }}|{{ 2 in [1, 2] }}|{{ 'k' in {'k': 1} }}|{{ not 'k' in {'k': 1} }}",
    "{{ 1 and 'x' }}|{{ 0 or 'y' }}|{{ '' or [] }}|{{ not none }}|{{ none or none }}|{{ 'a' if false }}|{{ 'a' if 0 else 'b' }}",
    # tests
    "{{ x is defined }}|{{ x is undefined }}|{{ none is none }}|{{ 'a' is string }}|{{ {} is mapping }}|{{ [] is iterable }}",
    "{{ 3 is odd }}|{{ 4 is even }}|{{ 9 is divisibleby 3 }}|{{ 1 is number }}|{{ 1.5 is float }}|{{ 1 is integer }}|{{ true is boolean }}",
    "{{ 'a' is sequence }}|{{ 1 is sequence }}|{{ true is true }}|{{ 0 is false }}|{{ 'a' is eq 'a' }}|{{ 2 is gt 1 }}|{{ 'x' is not string }}",
    "{{ 'a' is lower }}|{{ 'A' is upper }}|{{ 2 is in [1, 2] }}|{{ 2 is ne 2 }}|{{ messages is sequence }}|{{ add_generation_prompt is sameas true }}",
    # subscripts, slices, attributes
    "{{ messages[0]['role'] }}|{{ messages[1].content }}|{{ messages[-1].role }}|{{ messages[5] }}|{{ messages[0].missing }}",
    "{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ 'hello'[-2:] }}|{{ [1,2,3,4][::2] }}|{{ [1,2,3][1:] }}|{{ 'héllo'[1] }}|{{ 'abc'[5:] }}",
    "{{ messages[1:]|length }}|{{ messages[::-1][0].role }}|{{ 'abcdef'[-100:2] }}|{{ [1,2,3][:-1] }}|{{ 'abc'[::-2] }}",
    # string methods
    "{{ '  a b  '.strip() }}|{{ 'xxaxx'.strip('x') }}|{{ '\\n a'.lstrip() }}|{{ 'a \\n'.rstrip() }}|{{ 'a,b,,c'.split(',') }}",
    "{{ ' a  b '.split() }}|{{ 'a b c'.split(' ', 1) }}|{{ 'Hi'.upper() }}|{{ 'Hi'.lower() }}|{{ 'hello world'.title() }}",
    "{{ 'abc'.startswith('ab') }}|{{ 'abc'.endswith('bc') }}|{{ 'aaa'.replace('a', 'b') }}|{{ 'aaa'.replace('a', 'b', 2) }}",
    "{{ 'a-b'.split('-')[-1] }}|{{ 'abc'.find('c') }}|{{ 'x'.join(['1', '2']) }}|{{ 'hello'.capitalize() }}|{{ 'abc'.count('b') }}",
    # dict methods
    "{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{{ {'a': 1}.get('a') }}|{{ {'a': 1}.get('z', 'dflt') }}|{{ {'a': 1}.get('z') }}",
    "{{ {'a': 1, 'b': 2}.keys()|list }}|{{ {'a': 1, 'b': 2}.values()|list }}|{{ messages[0].get('role') }}",
    # filters
    "{{ '  x  '|trim }}|{{ 'xxyxx'|trim('x') }}|{{ messages|length }}|{{ 'héllo'|length }}|{{ 'abc'|upper }}|{{ 'ABC'|lower }}|{{ 'hello wORLD'|capitalize }}",
    "{{ [1, 2, 3]|first }}|{{ [1, 2, 3]|last }}|{{ 'abc'|first }}|{{ [1, 2]|join(', ') }}|{{ ['a', 'b']|join }}|{{ messages|map(attribute='role')|join('/') }}",
    "{{ x|default('d') }}|{{ ''|default('d') }}|{{ ''|default('d', true) }}|{{ none|default('d') }}|{{ x|d('e') }}",
    "{{ 'a-b'|replace('-', '+') }}|{{ 1|string }}|{{ '42'|int + 1 }}|{{ 'x'|int }}|{{ 3.9|int }}|{{ '2.5'|float }}|{{ [3, 1]|list }}",
    "{{ [1, 2, 1].count(1) }}|{{ ['a', 'b'].index('b') }}|{{ (1, 2).count(3) }}|{{ ' 7 '|int }}|{{ '1e3'|int }}|{{ none|int(5) }}",
    "{{ undefined_thing|int }}",
    "{{ undefined_thing|float }}",
    "{{ {'b': 1, 'a': 2}|items|list }}|{{ 'ab'|list }}|{{ [1, 2, 3]|reverse|list }}|{{ 'abc'|reverse }}|{{ -3|abs }}|{{ '<b>'|safe }}",
    "{{ messages|selectattr('role', 'equalto', 'user')|list|length }}|{{ messages|rejectattr('role', 'eq', 'user')|map(attribute='role')|join(',') }}",
    "{{ messages|selectattr('role')|list|length }}|{{ [1, 0, 2]|select|list }}|{{ [1, 2, 3]|reject('odd')|list }}|{{ ['a', 'b']|map('upper')|join }}",
    "{{ 'hello world'|title }}|{{ [3, 1, 2]|sort|list }}|{{ [1, 1, 2]|unique|list }}|{{ [1, 2]|sum }}|{{ [4, 2]|min }}|{{ [4, 2]|max }}|{{ 'a\\nb'|indent(2) }}",
    "{{ 2.567|round(2) }}|{{ 2.5|round }}|{{ 3.14159|round(3, 'floor') }}|{{ 2.1|round(0, 'ceil') }}|{{ 7|round }}",
    # tojson as transformers defines it
    "{{ {'a': [1, 2.5, none, true], 'b': 'é\"\\n'}|tojson }}|{{ 'x'|tojson }}|{{ {'k': 1}|tojson(indent=2) }}|{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}",
    "{{ messages[0]|tojson }}|{{ [1, [2, {}]]|tojson(indent=4) }}|{{ {'a': 1}|tojson(separators=(',', ':')) }}|{{ 1.0|tojson }}",
    # loops
    "{% for m in messages %}{{ loop.index0 }}{{ loop.index }}{{ loop.first }}{{ loop.last }}{{ loop.length }}{{ loop.revindex }}{{ loop.revindex0 }};{% endfor %}",
    "{% for m in messages %}{{ loop.previtem.role if loop.previtem is defined else '-' }}>{{ loop.nextitem.role if loop.nextitem is defined else '-' }};{% endfor %}",
    "{% for m in messages if m.role != 'system' %}{{ loop.index }}:{{ m.role }}/{{ loop.length }};{% endfor %}",
    "{% for x in [] %}a{% else %}empty{% endfor %}|{% for c in 'ab' %}{{ c }}{% endfor %}|{% for k in {'p': 1, 'q': 2} %}{{ k }}{% endfor %}",
    "{% for i in range(3) %}{{ i }}{% endfor %}|{% for i in range(1, 7, 2) %}{{ i }}{% endfor %}|{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}",
    "{% for i in range(5) %}{% if i == 3 %}{% break %}{% endif %}{% if i == 1 %}{% continue %}{% endif %}{{ i }}{% endfor %}",
    "{% for a in [1, 2] %}{% for b in 'xy' %}{{ a }}{{ b }}{{ loop.index }}{% endfor %}{{ loop.index }};{% endfor %}",
    "{% for m in messages %}{{ loop.cycle('odd', 'even') }}{% endfor %}",
    # set and scoping
    "{% set x = 1 %}{% for m in messages %}{% set x = x + 1 %}{{ x }}{% endfor %}{{ x }}",
    "{% set ns = namespace(n=0, s='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.s = ns.s + m.role[0] %}{% endfor %}{{ ns.n }}{{ ns.s }}",
    "{% set a, b = 1, 2 %}{{ a }}{{ b }}|{% set t %}block {{ 1 + 1 }}{% endset %}{{ t }}|{% set u = [1, 2] %}{{ u[1] }}",
    "{% if false %}a{% elif none %}b{% elif 'x' %}c{% else %}d{% endif %}|{% if messages %}yes{% endif %}|{% if [] %}{% else %}no{% endif %}",
    "{% set d = dict(a=1, b='x') %}{{ d.a }}{{ d['b'] }}|{% set n = namespace() %}{% set n.v = 3 %}{{ n.v }}",
    "{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}{{ greet('Bob') }}|{{ greet('Al', '?') }}|{{ greet(name='Cy') }}",
    # whitespace control
    "a  {{- ' b ' -}}  c\n  {%- if true %}  d  {% endif -%}\n e",
    "line1\n    {% if true %}\n    kept\n    {% endif %}\nline2\n  {# comment #}\nend",
    "x {% if true %}y{% endif %} z\n{% for i in [1,2] %}\n  {{ i }}\n{% endfor %}\ndone",
    "  {%+ if true %}plus{% endif +%}\nnext\n{{ 'v' }}  \n  {{ 'w' }}\n{#- c -#}\n  tail\n",
    "a\r\nb\rc\n{% if true %}\r\nd{% endif %}\n\n",
    "{%- set x = 'q' -%}\n\n   {{ x }}   \n\n{%- if x == 'q' -%}  yes  {%- endif -%}  ",
    "{% generation %}gen {{ 1 }}{% endgeneration %}",
    # errors
    "{{ raise_exception('custom failure: ' ~ messages|length) }}",
    "{{ undefined_var.attr }}",
    "{{ 'a' + 1 }}",
    "{{ messages[0].missing.deeper }}",
    "{{ 1 / 0 }}",
    "{{ [1] < 'a' }}",
    "{% set ns = namespace() %}{{ ns.missing }}|{{ messages[0]['nope'] is defined }}",
    "{{ 'abc'.nosuchmethod() }}",
    "{{ {'a': 1}.pop('a') }}",
]


# Whitespace control, generated: random nestings of text, tags with -/+ markers, comments and
# outputs (seeded, so the fixture is reproducible).
WS_TEXT = ["a", " ", "  ", "\t", "\n", "\n\n", " \n ", "x y", "\r\n", "\n  ", "  \n", "\u3000\n"]
WS_OPEN = ["{%", "{%-", "{%+"]
WS_CLOSE = ["%}", "-%}", "+%}"]


def ws_template(rng, depth=0):
    parts = []
    for _ in range(rng.randint(1, 5)):
        parts.append(rng.choice(WS_TEXT))
        k = rng.randrange(6 if depth < 2 else 4)
        o, c = rng.choice(WS_OPEN), rng.choice(WS_CLOSE)
        if k == 0:
            parts.append(rng.choice(["{{ 'v' }}", "{{- 'v' }}", "{{ 'v' -}}", "{{- 'v' -}}", "{{+ 'v' }}"]))
        elif k == 1:
            parts.append(rng.choice(["{# c #}", "{#- c #}", "{# c -#}", "{#- c -#}", "{#+ c +#}"]))
        elif k == 2:
            parts.append(f"{o} set z = 1 {c}")
        elif k == 3:
            parts.append(f"{o} raw {c} {{{{ r }}}} \n{rng.choice(WS_OPEN)} endraw {rng.choice(WS_CLOSE)}")
        elif k == 4:
            parts.append(f"{o} if true {c}" + ws_template(rng, depth + 1) + f"{rng.choice(WS_OPEN)} endif {rng.choice(WS_CLOSE)}")
        else:
            parts.append(f"{o} for i in [1, 2] {c}" + ws_template(rng, depth + 1)
                         + f"{rng.choice(WS_OPEN)} endfor {rng.choice(WS_CLOSE)}")
    parts.append(rng.choice(WS_TEXT))
    return "".join(parts)


# String methods and filters over strings where Unicode whitespace and case matter.
STRS = ["  a b  ", "\u00a0x\u2003", "hello wORLD it's", "ÉCOLE élève", "a\tb\nc\r\n", "", "x,y,,z", "ǅungla ǆ",
        "Ünïcödé 世界 🎉", "\x1c\x1dmid\x1e\x1f", "o'neil-smith 3rd"]
STR_OPS = ["{{ S.strip() }}", "{{ S.lstrip() }}", "{{ S.rstrip() }}", "{{ S.split() }}", "{{ S.split(',') }}",
           "{{ S.title() }}", "{{ S.capitalize() }}", "{{ S.upper() }}", "{{ S.lower() }}", "{{ S|trim }}",
           "{{ S|title }}", "{{ S|capitalize }}", "{{ S|length }}", "{{ S[::-1] }}", "{{ S[1:3] }}", "{{ S|tojson }}",
           "{{ S|list }}", "{{ S|tojson(ensure_ascii=true) }}", "{{ [S] }}", "{{ S is lower }}", "{{ S is upper }}",
           "{{ S.split(' ', 1) }}", "{{ S.strip('a x') }}", "{{ S|replace('', '.') }}", "{{ S.replace('l', 'L', 1) }}"]


# Scoping, loops and macros, generated: nested for/if/set/namespace/break/continue/macro
# statements that print what each scope sees.
SCOPE_VARS = ["a", "b", "m", "ns.x", "loop.index", "loop.first", "loop.length", "loop.previtem", "loop.nextitem",
              "loop.revindex"]


def scope_stmt(rng, d, in_loop):
    k = rng.randrange(8 if d < 3 else 4)
    if k == 0:
        return "{{ " + rng.choice(SCOPE_VARS) + " }}"
    if k == 1:
        return "{% set " + rng.choice(["a", "b"]) + " = " + rng.choice(["1", "a ~ 'x'", "b", "m", "loop.index", "'s'"]) + " %}"
    if k == 2:
        return "{% set ns.x = " + rng.choice(["ns.x ~ 'y'", "a", "loop.index0", "1"]) + " %}"
    if k == 3:
        return rng.choice(["-", "|", "\n", " "])
    if k == 4:
        return ("{% if " + rng.choice(["a", "b is defined", "loop.last", "m", "not a"]) + " %}" + scope_body(rng, d + 1, in_loop)
                + "{% else %}" + scope_body(rng, d + 1, in_loop) + "{% endif %}")
    if k == 5:
        return ("{% for m in " + rng.choice(["[1, 2]", "messages", "'ab'", "[]", "range(3)", "messages[1:]"])
                + rng.choice(["", " if m != 2"]) + " %}" + scope_body(rng, d + 1, True) + rng.choice(["", "{% else %}E"])
                + "{% endfor %}")
    if k == 6 and in_loop:
        return rng.choice(["{% break %}", "{% continue %}", "{% if loop.index == 2 %}{% break %}{% endif %}"])
    return ("{% macro mm(p, q='d') %}<{{ p }}{{ q }}{{ a }}>{% endmacro %}{{ mm(" + rng.choice(["1", "a", "m", "b"])
            + ") }}")


def scope_body(rng, d, in_loop):
    return "".join(scope_stmt(rng, d, in_loop) for _ in range(rng.randint(1, 4)))


def main():
    os.makedirs(OUT, exist_ok=True)
    templates, cases = [], []
    for label, tpl, bos, eos, d in real_templates():
        templates.append({"name": label, "template": tpl, "bos_token": bos, "eos_token": eos, "dir": d})
    for label, tpl, bos, eos in WRITTEN:
        templates.append({"name": label, "template": tpl, "bos_token": bos, "eos_token": eos})
    for ti, t in enumerate(templates):
        for cname, msgs in CONVERSATIONS:
            for agp in (False, True):
                res = render(t["template"], msgs, agp, t["bos_token"], t["eos_token"])
                if "dir" in t:
                    check_with_tokenizer(t["dir"], t["template"], msgs, agp, res)
                cases.append({"template": ti, "conversation": cname, "messages": msgs,
                              "add_generation_prompt": agp, **res})
    for t in templates:
        t.pop("dir", None)
    with open(os.path.join(OUT, "cases.json"), "w", encoding="utf-8") as f:
        json.dump({"templates": templates, "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    exprs = []
    for e in EXPRS:
        for agp in (False, True):
            res = render(e, EXPR_MESSAGES, agp, "<s>", "</s>")
            exprs.append({"template": e, "add_generation_prompt": agp, **res})
    import random
    rng = random.Random(1234)
    for _ in range(400):
        e = ws_template(rng)
        exprs.append({"template": e, "add_generation_prompt": False, **render(e, EXPR_MESSAGES, False, "<s>", "</s>")})
    for _ in range(400):
        e = ("{% set ns = namespace(x='') %}" + rng.choice(["", "{% set a = 0 %}"]) + scope_body(rng, 0, False)
             + "|{{ a }}|{{ b }}|{{ ns.x }}")
        exprs.append({"template": e, "add_generation_prompt": False, **render(e, EXPR_MESSAGES, False, "<s>", "</s>")})
    for st in STRS:
        for op in STR_OPS:
            e = "{% set S = " + json.dumps(st, ensure_ascii=False) + " %}" + op
            exprs.append({"template": e, "add_generation_prompt": False,
                          **render(e, EXPR_MESSAGES, False, "<s>", "</s>")})
    with open(os.path.join(OUT, "expr.json"), "w", encoding="utf-8") as f:
        json.dump({"messages": EXPR_MESSAGES, "bos_token": "<s>", "eos_token": "</s>", "cases": exprs}, f,
                  ensure_ascii=False, indent=1)
        f.write("\n")
    n_err = sum(1 for c in cases if "error" in c)
    print(f"{len(templates)} templates, {len(cases)} cases ({n_err} errors), {len(exprs)} expression cases")


if __name__ == "__main__":
    main()
