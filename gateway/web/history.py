"""A person's access history in plain words, from their audit events.

"Demo Shop read your phone number, partly hidden (like 138****5678) — 2026-03-03 14:02 UTC,
for Delivery contact." Field words come from the catalogue and the shop's policy; values
are never in the log, so never here either.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.audit.query import LoggedEvent
from gateway.oidc.clients import ShopRegistry
from gateway.policy import Catalogue, describe

ACTION_WORDS: dict[str, dict[str, str]] = {
    "userinfo_read": {"en": "{shop} read {fields}", "zh-CN": "{shop} 读取了{fields}"},
    "consent_granted": {"en": "You allowed {shop} to receive {fields}",
                        "zh-CN": "您允许 {shop} 获取{fields}"},
    "consent_withdrawn": {"en": "You withdrew {fields} from {shop}", "zh-CN": "您撤回了 {shop} 的{fields}"},
    "code_issued": {"en": "You signed in to {shop}", "zh-CN": "您登录了 {shop}"},
    "token_issued": {"en": "{shop} received a sign-in token", "zh-CN": "{shop} 获得了登录令牌"},
    "token_refreshed": {"en": "{shop} renewed its sign-in token", "zh-CN": "{shop} 更新了登录令牌"},
    "token_revoked": {"en": "{shop}'s sign-in for you ended", "zh-CN": "{shop} 的登录已结束"},
    "token_introspected": {"en": "{shop} checked its sign-in token", "zh-CN": "{shop} 核验了登录令牌"},
    "sign_in": {"en": "You signed in to Consent Gateway", "zh-CN": "您登录了授权网关"},
    "identity_linked": {"en": "You linked another sign-in method", "zh-CN": "您关联了其他登录方式"},
    "profile_exported": {"en": "You downloaded your data", "zh-CN": "您下载了您的数据"},
    "person_erased": {"en": "Your account was erased", "zh-CN": "您的账户已删除"},
}
FOR = {"en": "for", "zh-CN": "用于"}
NOTHING = {"en": "nothing", "zh-CN": "（无）"}


@dataclass(frozen=True, slots=True)
class HistoryLine:
    index: int
    when: str
    text: str
    purposes: str
    outcome: str


def history_lines(events: list[LoggedEvent], shops: ShopRegistry, catalogue: Catalogue,
                  language: str) -> list[HistoryLine]:
    lines = []
    for logged in events:
        event = logged.event
        template = ACTION_WORDS.get(event.action)
        if template is None:
            continue
        shop = shops.get(event.shop)
        shop_name = (shop.config.name_zh or shop.config.name) if shop and language == "zh-CN" else (
            shop.config.name if shop else (event.shop or ""))
        words = []
        for field in event.fields:
            spec = catalogue.fields.get(field)
            if spec is None:
                continue
            rule = next((r for r in shop.config.policy.fields if r.field == field), None) if shop else None
            words.append(describe(rule.transform if rule else "pass", spec.description.get(language),
                                  language, spec.type))
        separator = "、" if language == "zh-CN" else "; "
        text = template.get(language, template["en"]).format(
            shop=shop_name, fields=separator.join(words) or NOTHING.get(language, "nothing"))
        purposes = ""
        if event.purpose and shop:
            names = [p.name.get(language) for pid in event.purpose.split("+")
                     if (p := shop.config.policy.purpose(pid)) is not None]
            purposes = f"{FOR.get(language, 'for')} {', '.join(names)}" if names else ""
        when = event.time[:16].replace("T", " ") + " UTC"
        lines.append(HistoryLine(logged.index, when, text, purposes, event.outcome))
    return lines
