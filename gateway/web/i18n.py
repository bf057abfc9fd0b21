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
    "error_unavailable": {
        "en": "The service is briefly unavailable. Please try again in a few seconds.",
        "zh-CN": "服务暂时不可用，请几秒后重试。",
    },
    "error_rate_limited": {
        "en": "Too many attempts from here. Please wait a minute and try again.",
        "zh-CN": "操作过于频繁，请稍候一分钟再试。",
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
    "account_title": {"en": "What you have shared", "zh-CN": "您的授权"},
    "account_hint": {"en": "Every shop you allowed to receive information about you. Withdraw "
                           "anything at any time; it takes effect at once.",
                     "zh-CN": "您授权过的所有商店。您可以随时撤回，立即生效。"},
    "account_empty": {"en": "You have not shared anything with a shop yet.",
                      "zh-CN": "您尚未向任何商店授权。"},
    "policy_version": {"en": "Policy version", "zh-CN": "政策版本"},
    "contact": {"en": "Contact", "zh-CN": "联系方式"},
    "granted_on": {"en": "granted", "zh-CN": "授权于"},
    "expires_on": {"en": "expires", "zh-CN": "到期"},
    "withdraw_field": {"en": "Withdraw this", "zh-CN": "撤回此项"},
    "withdraw_purpose": {"en": "Withdraw this purpose", "zh-CN": "撤回此目的"},
    "withdraw_shop": {"en": "Withdraw everything from this shop", "zh-CN": "撤回对该商店的全部授权"},
    "your_data": {"en": "Your data", "zh-CN": "您的数据"},
    "access_history": {"en": "Who accessed what", "zh-CN": "访问记录"},
    "access_history_hint": {
        "en": "Every access is written to a tamper-evident log. Each line has a proof you can "
              "check yourself against the signed",
        "zh-CN": "每次访问都记录在防篡改日志中。每条记录都附有可自行核验的证明，核验依据为已签名的"},
    "latest_checkpoint": {"en": "latest checkpoint", "zh-CN": "最新检查点"},
    "history_empty": {"en": "Nothing yet.", "zh-CN": "暂无记录。"},
    "console_title": {"en": "Compliance console", "zh-CN": "合规控制台"},
    "console_token": {"en": "Staff token", "zh-CN": "员工令牌"},
    "console_sign_in": {"en": "Sign in", "zh-CN": "登录"},
    "console_sign_out": {"en": "Sign out", "zh-CN": "退出"},
    "console_login_failed": {"en": "This token is not valid.", "zh-CN": "令牌无效。"},
    "console_integrity": {"en": "Integrity", "zh-CN": "完整性"},
    "console_checkpoint": {"en": "Latest signed checkpoint covers", "zh-CN": "最新签名检查点覆盖"},
    "console_no_checkpoint": {"en": "No checkpoint signed yet.", "zh-CN": "尚无已签名的检查点。"},
    "console_verified": {"en": "Last verified", "zh-CN": "上次核验"},
    "console_never_verified": {"en": "Not verified yet.", "zh-CN": "尚未核验。"},
    "console_ok": {"en": "intact", "zh-CN": "完整"},
    "console_failed": {"en": "FAILED", "zh-CN": "失败"},
    "console_verify_now": {"en": "Verify the whole log now", "zh-CN": "立即核验整个日志"},
    "console_verifier_key": {"en": "Verifier key", "zh-CN": "验证公钥"},
    "console_search": {"en": "Search events", "zh-CN": "查询事件"},
    "console_search_button": {"en": "Search", "zh-CN": "查询"},
    "console_export": {"en": "Export", "zh-CN": "导出"},
    "console_results": {"en": "Matching events (oldest first)", "zh-CN": "匹配的事件（按时间先后）"},
    "console_next": {"en": "Next page", "zh-CN": "下一页"},
    "console_releases": {"en": "Data released, last 14 days", "zh-CN": "最近 14 天的数据提供"},
    "console_by_shop": {"en": "userinfo reads per shop", "zh-CN": "各商店的读取次数"},
    "console_by_field": {"en": "fields released", "zh-CN": "各字段的提供次数"},
    "download_proof": {"en": "proof", "zh-CN": "证明"},
    "link_provider": {"en": "Link another sign-in method", "zh-CN": "关联其他登录方式"},
    "download_data": {"en": "Download my data", "zh-CN": "下载我的数据"},
    "erase_account": {"en": "Erase my account", "zh-CN": "删除我的账户"},
    "confirm": {"en": "Yes, do it", "zh-CN": "确认"},
    "cancel": {"en": "Cancel", "zh-CN": "取消"},
    "confirm_withdraw_title": {"en": "Withdraw consent?", "zh-CN": "撤回授权？"},
    "confirm_withdraw": {"en": "The shop will stop receiving this at once, and its current "
                               "sign-in for you ends.",
                         "zh-CN": "商店将立即停止获取此信息，其当前登录状态也将结束。"},
    "confirm_erase_title": {"en": "Erase your account?", "zh-CN": "删除您的账户？"},
    "confirm_erase": {"en": "Your profile and consents are destroyed and every shop loses access. "
                            "A record that this happened is kept, without your data.",
                      "zh-CN": "您的资料和授权将被销毁，所有商店都将失去访问权限。"
                               "系统会保留一条不含您数据的操作记录。"},
    "erased": {"en": "Your account has been erased.", "zh-CN": "您的账户已删除。"},
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
    # A provider whose circuit is open (docs/providers.md, "Slow providers").
    "provider_unavailable": {
        "en": "This sign-in method is temporarily unavailable: it has been failing, so it is "
              "not tried for a short while. Other sign-in methods still work.",
        "zh-CN": "此登录方式暂时不可用：它近期多次失败，短时间内不会再尝试。其他登录方式仍可使用。",
    },
    "unavailable_now": {"en": "temporarily unavailable", "zh-CN": "暂时不可用"},
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
