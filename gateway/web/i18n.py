"""Two languages, zh-CN and en: chosen by ``?lang=``, then a cookie, then Accept-Language."""

from __future__ import annotations

LANGUAGES = ("zh-CN", "en")
LANG_COOKIE = "cg_lang"  # also set by /authorize from ui_locales

MESSAGES: dict[str, dict[str, str]] = {
    "title": {"en": "Consent Gateway", "zh-CN": "授权网关"},
    "switch": {"en": "中文", "zh-CN": "English"},
    "error_title": {"en": "This request cannot be completed", "zh-CN": "无法完成此请求"},
    "error_hint": {
        "en": "Nothing was shared. Go back to the shop and try again.",
        "zh-CN": "没有共享任何信息。请返回商店重试。",
    },
    "back_to_shop": {"en": "Return to the shop", "zh-CN": "返回商店"},
    "choose_provider": {"en": "Sign in to continue to", "zh-CN": "登录以继续前往"},
    "choose_hint": {
        "en": "Choose how to sign in. The shop will only see what you agree to on the next page.",
        "zh-CN": "请选择登录方式。商店只能看到您在下一页同意提供的信息。",
    },
    "demo_idp_title": {"en": "Demo sign-in (simulated provider)", "zh-CN": "演示登录（模拟第三方）"},
    "demo_idp_hint": {
        "en": "These are fictional people. Pick one to sign in as.",
        "zh-CN": "以下均为虚构人物。请选择一位登录。",
    },
    "sign_in_as": {"en": "Sign in as", "zh-CN": "登录为"},
    "consent_title": {"en": "wants to know about you", "zh-CN": "请求获取您的信息"},
    "consent_hint": {
        "en": "Only what is listed below will be shared. You can withdraw later.",
        "zh-CN": "只会共享下列信息。您之后可以随时撤回。",
    },
    "allow": {"en": "Allow", "zh-CN": "同意"},
    "deny": {"en": "Deny", "zh-CN": "拒绝"},
    "consent_pseudonym": {
        "en": "To sign you in, the shop gets a pseudonym that is different for every shop.",
        "zh-CN": "为了让您登录，商店会获得一个仅用于该商店的匿名标识。"},
    "legal_basis": {"en": "Legal basis", "zh-CN": "法律依据"},
    "retention": {"en": "Kept for", "zh-CN": "保存期限"},
    "days": {"en": "days", "zh-CN": "天"},
    "allow_required": {"en": "Allow the shop to use, for this purpose:",
                       "zh-CN": "允许商店为此目的使用："},
    "optional": {"en": "optional", "zh-CN": "可选"},
    "sensitive_note": {"en": "Sensitive personal information: ask separately.",
                       "zh-CN": "敏感个人信息，需单独同意。"},
    "sensitive_why": {"en": "Why it is needed:", "zh-CN": "使用原因："},
    "allow_selected": {"en": "Allow what I ticked", "zh-CN": "同意所勾选的内容"},
    "basis_consent": {"en": "your consent", "zh-CN": "您的同意"},
    "basis_contract": {"en": "necessary for a contract with you", "zh-CN": "履行与您的合同所必需"},
    "basis_legal_obligation": {"en": "a legal obligation", "zh-CN": "履行法定义务"},
    "logout_title": {"en": "Sign out of Consent Gateway?", "zh-CN": "退出授权网关？"},
    "logout_confirm": {"en": "Sign out", "zh-CN": "退出"},
    "logged_out": {"en": "You are signed out.", "zh-CN": "您已退出登录。"},
    "upstream_failed": {
        "en": "The sign-in provider did not complete the sign-in.",
        "zh-CN": "第三方登录未能完成。",
    },
}


def pick_language(query_lang: str | None, cookie_lang: str | None, accept_language: str) -> str:
    for candidate in (query_lang, cookie_lang):
        if candidate in LANGUAGES:
            return str(candidate)
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().lower()
        if tag.startswith("zh"):
            return "zh-CN"
        if tag.startswith("en"):
            return "en"
    return "zh-CN"


def translator(language: str) -> dict[str, str]:
    return {key: texts.get(language, texts["en"]) for key, texts in MESSAGES.items()}
