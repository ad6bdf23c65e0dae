"""Checks of the email templates a config names, made before a push applies anything.

A `{% extends %}` or `{% include %}` is resolved only when an email is rendered, so a name that
names no file would fail every email of that template, one user at a time. Here the templates
are compiled (not rendered) and each such tag with a literal name is looked up in the config's
template folder; the templates they name are checked in turn.
"""

from __future__ import annotations

from django.template import Engine, TemplateDoesNotExist, TemplateSyntaxError
from django.template.loader_tags import ExtendsNode, IncludeNode

from segflow.config import Config
from segflow.config.findings import Finding, unique


def missing_templates(config: Config) -> list[Finding]:
    """The `{% extends %}` and `{% include %}` tags, in the templates the config names and in
    those they bring in, that name a template file that does not exist."""
    engine = Engine(dirs=[str(config.base_dir)], debug=False)
    contents = [*config.templates.values(), *config.transactions.values()]
    queue = [str(content.html) for content in contents if isinstance(content.html, str)]
    seen: set[str] = set()
    findings = []
    while queue:
        name = queue.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            template = engine.get_template(name)
        except (TemplateDoesNotExist, TemplateSyntaxError):
            continue  # said where it is named (or, for a config's own file, by the push's compile)
        for node in template.nodelist.get_nodes_by_type((ExtendsNode, IncludeNode)):
            expression = node.parent_name if isinstance(node, ExtendsNode) else node.template
            named = expression.var if not expression.filters else None
            if not isinstance(named, str):
                continue  # a variable: which file it names is known only when rendering
            try:
                engine.find_template(named)
            except TemplateDoesNotExist:
                tag = "extends" if isinstance(node, ExtendsNode) else "include"
                findings.append(
                    Finding(
                        name,
                        node.token.lineno,
                        f'{{% {tag} "{named}" %}} names a template that does not exist; '
                        "template names are relative to the config file's folder",
                    )
                )
            else:
                queue.append(named)
    return unique(findings)
