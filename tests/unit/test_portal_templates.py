"""The portal's Jinja environment looks keys up first in dicts, for speed: it must render every
template exactly as Jinja's own lookup (attribute first, then key) does."""

from __future__ import annotations

import jinja2

from tre.portal import _Templates

TEMPLATE = (
    "{{ d.title }}|{{ d.missing is undefined }}|{{ d.get('title') }}|"
    "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}|{{ d.nested.id }}|{{ o.real }}"
)


def test_dict_lookups_render_as_jinja_renders_them():
    ours = _Templates(autoescape=True).from_string(TEMPLATE)
    theirs = jinja2.Environment(autoescape=True).from_string(TEMPLATE)
    for d in (
        {"title": "<b>Table 1</b>", "nested": {"id": 7}},
        {"title": "a key named like a method", "items": "shadow", "get": 1, "nested": {}},
        {"nested": {"title": "no id"}},
    ):
        rendered = ours.render(d=d, o=3 + 4j)
        assert rendered == theirs.render(d=d, o=3 + 4j)
        assert "&lt;b&gt;" in rendered or "<b>" not in str(d)
