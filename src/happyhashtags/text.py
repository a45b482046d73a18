"""Hashtag extraction and normalization.

:func:`extract_hashtags` follows the rules of Twitter's reference library, twitter-text (its
``extractHashtags``, version 3; the regular expressions are ported from its JavaScript and Java
``validHashtag`` / ``extractUrl`` and friends):

* ``#`` or the fullwidth ``＃`` starts a hashtag, unless it follows ``&`` or a hashtag character
  (so ``foo#bar`` and ``&#39;`` are not hashtags); a preceding emoji variation selector
  (U+FE0E/U+FE0F) does not count as a hashtag character, so ``✌️#tag`` is a hashtag.
* Hashtag characters are Unicode letters and marks, decimal digits, ``_`` and a few characters that
  twitter-text allows inside words (ZWNJ/ZWJ, middle dot, Hebrew geresh/gershayim/maqaf, Japanese
  sound and iteration marks, the fullwidth tilde, Tibetan tsheg, ...). A tag needs at least one
  letter or mark: ``#2024`` and ``#_`` are not hashtags.
* A match that is directly followed by another ``#``/``＃`` or by ``://`` is dropped (``#a#b``,
  ``#http://x``), and so is a keycap (``#`` + U+FE0F or U+20E3).
* Hashtags that overlap a URL are dropped (``example.com/#anchor``). URLs are found with
  twitter-text's own URL grammar and TLD lists, so what counts as a URL is what it counts.

Deliberate differences, all on odd input: Unicode properties come from the ``regex`` module's
(newer) Unicode tables; a lone surrogate (broken input) before ``#`` counts as a non-hashtag
character (as in the Java library; the JavaScript one skips such a hashtag); indices are code
points, so the JavaScript library's habit of splitting an emoji before a domain into two UTF-16
halves is not copied; and a URL domain is limited to 63-character labels and 10 subdomains, which
keeps the time linear in the length of the text (see ``_MAX_LABEL``).
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import Any, Final, NamedTuple

import regex  # type: ignore[import-untyped, unused-ignore]

__all__ = ["extract_hashtags", "normalize_hashtag"]

# --- Hashtags ------------------------------------------------------------------------------------

# twitter-text's letter set is \p{L}\p{M} plus ranges that its generator added for older Unicode
# tables; every one of those is a letter or mark in the tables used here except these private-use
# code points, which twitter-text treats as letters too.
_LETTERS: Final = r"\p{L}\p{M}\uF870-\uF87F\uF882\uF884-\uF89F\uF8B8\uF8C1-\uF8D6"
_NUMERALS: Final = r"\p{Nd}"
_SPECIALS: Final = (
    r"_"
    r"\u200C\u200D"  # zero-width non-joiner and joiner (Persian, Indic scripts)
    r"\uA67E"  # Cyrillic kavyka
    r"\u05BE\u05F3\u05F4"  # Hebrew maqaf, geresh, gershayim (as in צה״ל)
    r"\uFF5E\u301C"  # fullwidth tilde, wave dash (Japanese)
    r"\u309B\u309C\u30A0\u30FB\u3003"  # kana voiced sound marks, double hyphen, middle dot, ditto
    r"\u0F0B\u0F0C"  # Tibetan tsheg
    r"\u00B7"  # middle dot (Catalan l·l)
)
_ALNUM: Final = _LETTERS + _NUMERALS + _SPECIALS


# The hash sign is matched first and the character before it checked with a lookbehind, where
# twitter-text consumes that character instead: this lets the engine jump from '#' to '#'. The
# matches are the same, since a tag ends before a non-hashtag character, except where the character
# before the '#' is a variation selector that ended the previous match (see _extract_exactly).
# The tag is "non-letters, one letter, anything": the same strings as twitter-text's
# "alnum* letter alnum*", without its backtracking on long runs of digits.
def _hashtag_pattern(hash_signs: str, *, check_end: bool) -> Any:
    boundary = rf"(?:(?<=[\uFE0E\uFE0F]{hash_signs})|(?<![&{_ALNUM}]{hash_signs}))"
    keycap = r"(?![\uFE0F\u20E3])"  # "#️⃣" is an emoji, not a hashtag
    if check_end:
        # The whole tag or nothing: a match followed by a hash sign or "://" is no hashtag
        # (twitter-text's endHashtagMatch), and a shorter piece of it is none either.
        tag = rf"([{_NUMERALS}{_SPECIALS}]*+[{_LETTERS}][{_ALNUM}]*+)(?![#＃]|://)"
    else:
        tag = rf"([{_NUMERALS}{_SPECIALS}]*[{_LETTERS}][{_ALNUM}]*)"
    # VERSION1 only because it runs these large sets faster; the syntax used means the same.
    return regex.compile(hash_signs + boundary + keycap + tag, regex.VERSION1)


# Searching for a literal '#' is much faster than for a class, and most text has no '＃'.
_HASHTAG_RE: Final = _hashtag_pattern("#", check_end=True)
_ANY_HASHTAG_RE: Final = _hashtag_pattern("[#＃]", check_end=True)
# For _extract_exactly, which needs the matches that the end check rejects too.
_UNCHECKED_HASHTAG_RE: Final = _hashtag_pattern("[#＃]", check_end=False)
# The same rules restricted to ASCII text, where hashtag characters are [A-Za-z0-9_] and there is
# no '＃' or variation selector. The standard library runs this several times faster.
_ASCII_HASHTAG_RE: Final = re.compile(
    r"#(?<![&A-Za-z0-9_]#)([0-9_]*+[A-Za-z][A-Za-z0-9_]*+)(?!#|://)"
)
# Finds a '#' whose outcome depends on a non-ASCII character: the one before it, or the one that
# ends its run of ASCII hashtag characters. Where there is none, _ASCII_HASHTAG_RE is exact.
_NON_ASCII_NEAR_HASH_RE: Final = re.compile(r"#(?:(?<=[^\x00-\x7f]#)|[A-Za-z0-9_]*+[^\x00-\x7f])")
_INVALID_HASHTAG_END: Final = ("#", "＃", "://")
_VARIATION_SELECTORS: Final = "\ufe0e\ufe0f"
_SELECTOR_BEFORE_HASH: Final = ("\ufe0e#", "\ufe0f#", "\ufe0e＃", "\ufe0f＃")

# --- URLs (only to drop hashtags inside them) ---------------------------------------------------

# twitter-text's TLD lists (its TldLists / validGTLD / validCCTLD), whitespace separated.
_GTLDS: Final = """
    삼성 닷컴 닷넷 香格里拉 餐厅 食品 飞利浦 電訊盈科 集团 通販 购物 谷歌 诺基亚 联通 网络
    网站 网店 网址 组织机构 移动 珠宝 点看 游戏 淡马锡 机构 書籍 时尚 新闻 政府 政务 招聘 手表
    手机 我爱你 慈善 微博 广东 工行 家電 娱乐 天主教 大拿 大众汽车 在线 嘉里大酒店 嘉里 商标
    商店 商城 公益 公司 八卦 健康 信息 佛山 企业 中文网 中信 世界 ポイント ファッション セール
    ストア コム グーグル クラウド みんな คอม संगठन नेट कॉम همراه موقع موبايلي كوم كاثوليك عرب
    شبكة بيتك بازار العليان ارامكو اتصالات ابوظبي קום сайт рус орг онлайн москва ком католик
    дети zuerich zone zippo zip zero zara zappos yun youtube you yokohama yoga yodobashi
    yandex yamaxun yahoo yachts xyz xxx xperia xin xihuan xfinity xerox xbox wtf wtc wow world
    works work woodside wolterskluwer wme winners wine windows win williamhill wiki wien
    whoswho weir weibo wedding wed website weber webcam weatherchannel weather watches watch
    warman wanggou wang walter walmart wales vuelos voyage voto voting vote volvo volkswagen
    vodka vlaanderen vivo viva vistaprint vista vision visa virgin vip vin villas viking vig
    video viajes vet versicherung vermögensberatung vermögensberater verisign ventures vegas
    vanguard vana vacations ups uol uno university unicom uconnect ubs ubank tvs tushu tunes
    tui tube trv trust travelersinsurance travelers travelchannel travel training trading
    trade toys toyota town tours total toshiba toray top tools tokyo today tmall tkmaxx tjx
    tjmaxx tirol tires tips tiffany tienda tickets tiaa theatre theater thd teva tennis
    temasek telefonica telecity tel technology tech team tdk tci taxi tax tattoo tatar
    tatamotors target taobao talk taipei tab systems symantec sydney swiss swiftcover swatch
    suzuki surgery surf support supply supplies sucks style study studio stream store storage
    stockholm stcgroup stc statoil statefarm statebank starhub star staples stada srt srl
    spreadbetting spot sport spiegel space soy sony song solutions solar sohu software
    softbank social soccer sncf smile smart sling skype sky skin ski site singles sina silk
    shriram showtime show shouji shopping shop shoes shiksha shia shell shaw sharp shangrila
    sfr sexy sex sew seven ses services sener select seek security secure seat search scot
    scor scjohnson science schwarz schule school scholarships schmidt schaeffler scb sca sbs
    sbi saxo save sas sarl sapo sap sanofi sandvikcoromant sandvik samsung samsclub salon sale
    sakura safety safe saarland ryukyu rwe run ruhr rugby rsvp room rogers rodeo rocks rocher
    rmit rip rio ril rightathome ricoh richardli rich rexroth reviews review restaurant rest
    republican report repair rentals rent ren reliance reit reisen reise rehab redumbrella
    redstone red recipes realty realtor realestate read raid radio racing qvc quest quebec
    qpon pwc pub prudential pru protection property properties promo progressive prof
    productions prod pro prime press praxi pramerica post porn politie poker pohl pnc plus
    plumbing playstation play place pizza pioneer pink ping pin pid pictures pictet pics
    piaget physio photos photography photo phone philips phd pharmacy pfizer pet pccw pay
    passagens party parts partners pars paris panerai panasonic pamperedchef page ovh ott
    otsuka osaka origins orientexpress organic org orange oracle open ooo onyourside online
    onl ong one omega ollo oldnavy olayangroup olayan okinawa office off observer obi nyc ntt
    nrw nra nowtv nowruz now norton northwesternmutual nokia nissay nissan ninja nikon nike
    nico nhk ngo nfl nexus nextdirect next news newholland new neustar network netflix netbank
    net nec nba navy natura nationwide name nagoya nadex nab mutuelle mutual museum mtr mtpc
    mtn msd movistar movie mov motorcycles moto moscow mortgage mormon mopar montblanc monster
    money monash mom moi moe moda mobily mobile mobi mma mls mlb mitsubishi mit mint mini mil
    microsoft miami metlife merckmsd meo menu men memorial meme melbourne meet media med
    mckinsey mcdonalds mcd mba mattel maserati marshalls marriott markets marketing market map
    mango management man makeup maison maif madrid macys luxury luxe lupin lundbeck ltda ltd
    lplfinancial lpl love lotto lotte london lol loft locus locker loans loan llp llc lixil
    living live lipsy link linde lincoln limo limited lilly like lighting lifestyle
    lifeinsurance life lidl liaison lgbt lexus lego legal lefrak leclerc lease lds lawyer law
    latrobe latino lat lasalle lanxess landrover land lancome lancia lancaster lamer
    lamborghini ladbrokes lacaixa kyoto kuokgroup kred krd kpn kpmg kosher komatsu koeln kiwi
    kitchen kindle kinder kim kia kfh kerryproperties kerrylogistics kerryhotels kddi kaufen
    juniper juegos jprs jpmorgan joy jot joburg jobs jnj jmp jll jlc jio jewelry jetzt jeep
    jcp jcb java jaguar iwc iveco itv itau istanbul ist ismaili iselect irish ipiranga
    investments intuit international intel int insure insurance institute ink ing info
    infiniti industries inc immobilien immo imdb imamat ikano iinet ifm ieee icu ice icbc ibm
    hyundai hyatt hughes htc hsbc how house hotmail hotels hoteles hot hosting host hospital
    horse honeywell honda homesense homes homegoods homedepot holiday holdings hockey hkt hiv
    hitachi hisamitsu hiphop hgtv hermes here helsinki help healthcare health hdfcbank hdfc
    hbo haus hangout hamburg hair guru guitars guide guge gucci guardian group grocery gripe
    green gratis graphics grainger gov got gop google goog goodyear goodhands goo golf
    goldpoint gold godaddy gmx gmo gmbh gmail globo global gle glass glade giving gives gifts
    gift ggee george genting gent gea gdn gbiz gay garden gap games game gallup gallo gallery
    gal fyi futbol furniture fund fun fujixerox fujitsu ftr frontier frontdoor frogans frl
    fresenius free fox foundation forum forsale forex ford football foodnetwork food foo fly
    flsmidth flowers florist flir flights flickr fitness fit fishing fish firmdale firestone
    fire financial finance final film fido fidelity fiat ferrero ferrari feedback fedex fast
    fashion farmers farm fans fan family faith fairwinds fail fage extraspace express exposed
    expert exchange everbank events eus eurovision etisalat esurance estate esq erni ericsson
    equipment epson epost enterprises engineering engineer energy emerck email education edu
    edeka eco eat earth dvr dvag durban dupont duns dunlop duck dubai dtv drive download dot
    doosan domains doha dog dodge doctor docs dnp diy dish discover discount directory direct
    digital diet diamonds dhl dev design desi dentist dental democrat delta deloitte dell
    delivery degree deals dealer deal dds dclk day datsun dating date data dance dad dabur
    cyou cymru cuisinella csc cruises cruise crs crown cricket creditunion creditcard credit
    cpa courses coupons coupon country corsica coop cool cookingchannel cooking contractors
    contact consulting construction condos comsec computer compare company community commbank
    comcast com cologne college coffee codes coach clubmed club cloud clothing clinique clinic
    click cleaning claims cityeats city citic citi citadel cisco circle cipriani church
    chrysler chrome christmas chloe chintai cheap chat chase charity channel chanel cfd cfa
    cern ceo center ceb cbs cbre cbn cba catholic catering cat casino cash caseih case casa
    cartier cars careers career care cards caravan car capitalone capital capetown canon
    cancerresearch camp camera cam calvinklein call cal cafe cab bzh buzz buy business
    builders build bugatti budapest brussels brother broker broadway bridgestone bradesco box
    boutique bot boston bostik bosch boots booking book boo bond bom bofa boehringer boats
    bnpparibas bnl bmw bms blue bloomberg blog blockbuster blanco blackfriday black biz bio
    bingo bing bike bid bible bharti bet bestbuy best berlin bentley beer beauty beats bcn bcg
    bbva bbt bbc bayern bauhaus basketball baseball bargains barefoot barclays barclaycard
    barcelona bar bank band bananarepublic banamex baidu baby azure axa aws avianca autos auto
    author auspost audio audible audi auction attorney athleta associates asia asda arte art
    arpa army archi aramco arab aquarelle apple app apartments aol anz anquan android
    analytics amsterdam amica amfam amex americanfamily americanexpress alstom alsace ally
    allstate allfinanz alipay alibaba alfaromeo akdn airtel airforce airbus aigo aig agency
    agakhan africa afl afamilycompany aetna aero aeg adult ads adac actor active aco
    accountants accountant accenture academy abudhabi abogado able abc abbvie abbott abb
    abarth aarp aaa onion
"""

_CCTLDS: Final = """
    한국 香港 澳門 新加坡 台灣 台湾 中國 中国 გე ລາວ ไทย ලංකා ഭാരതം ಭಾರತ భారత్ சிங்கப்பூர்
    இலங்கை இந்தியா ଭାରତ ભારત ਭਾਰਤ ভাৰত ভারত বাংলা भारोत भारतम् भारत ڀارت پاکستان موريتانيا
    مليسيا مصر قطر فلسطين عمان عراق سورية سودان تونس بھارت بارت ایران امارات المغرب السعودية
    الجزائر البحرين الاردن հայ қаз укр срб рф мон мкд ею бел бг ευ ελ zw zm za yt ye ws wf vu
    vn vi vg ve vc va uz uy us um uk ug ua tz tw tv tt tr tp to tn tm tl tk tj th tg tf td tc
    sz sy sx sv su st ss sr so sn sm sl sk sj si sh sg se sd sc sb sa rw ru rs ro re qa py pw
    pt ps pr pn pm pl pk ph pg pf pe pa om nz nu nr np no nl ni ng nf ne nc na mz my mx mw mv
    mu mt ms mr mq mp mo mn mm ml mk mh mg mf me md mc ma ly lv lu lt ls lr lk li lc lb la kz
    ky kw kr kp kn km ki kh kg ke jp jo jm je it is ir iq io in im il ie id hu ht hr hn hm hk
    gy gw gu gt gs gr gq gp gn gm gl gi gh gg gf ge gd gb ga fr fo fm fk fj fi eu et es er eh
    eg ee ec dz do dm dk dj de cz cy cx cw cv cu cr co cn cm cl ck ci ch cg cf cd cc ca bz by
    bw bv bt bs br bq bo bn bm bl bj bi bh bg bf be bd bb ba az ax aw au at as ar aq ao an am
    al ai ag af ae ad ac
"""

_SPACES: Final = r"\x09-\x0D\x20\x85\xA0\u1680\u180E\u2000-\u200A\u2028\u2029\u202F\u205F\u3000"
_INVALID_CHARS: Final = r"\uFFFE\uFEFF\uFFFF"
_DIRECTIONAL: Final = r"\u202A-\u202E\u061C\u200E\u200F\u2066-\u2069"
# twitter-text's punctuation set (it leaves out '"' and '`', so those are domain characters there).
_PUNCT: Final = r"!'#%&()*+,\\\-./:;<=>?@\[\]\^_{|}~$"
_LATIN_ACCENTS: Final = (
    r"\xC0-\xD6\xD8-\xF6\xF8-\xFF\u0100-\u024F\u0253\u0254\u0256\u0257\u0259\u025B\u0263\u0268"
    r"\u026F\u0272\u0289\u028B\u02BB\u0300-\u036F\u1E00-\u1EFF"
)
_CYRILLIC: Final = r"\u0400-\u04FF"

_NOT_DOMAIN: Final = _PUNCT + _SPACES + _INVALID_CHARS + _DIRECTIONAL
_DOMAIN_CHAR: Final = f"[^{_NOT_DOMAIN}]"
# (?:[_-]|D) and (?:-|D) from twitter-text, written as single classes. A label is a run of these
# characters up to a '.', so it can be matched atomically (as the Java port does for subdomains).
_NOT_SUBDOMAIN_BODY: Final = _NOT_DOMAIN.replace("\\-", "").replace("_", "")
_NOT_DOMAIN_BODY: Final = _NOT_DOMAIN.replace("\\-", "")
# Two bounds twitter-text does not have. It tries a URL at every place one could start, and each
# try walks all the "label." pieces that follow and backs off through them looking for a TLD, so
# a long run of them ("a.a.a...") or one long label (thousands of CJK characters with no space)
# costs time quadratic in its length: minutes for a 10,000-character post. With at most 63
# characters per label (twitter-text rejects longer ones anyway, after matching) and at most 10
# subdomains (no real host has more) each try is short, and the scan stays linear.
_MAX_LABEL: Final = 63
_MAX_SUBDOMAINS: Final = 10
_SUBDOMAIN: Final = (
    rf"(?:(?>{_DOMAIN_CHAR}(?:[^{_NOT_SUBDOMAIN_BODY}]{{0,{_MAX_LABEL - 2}}}{_DOMAIN_CHAR})?)\.)"
)
_DOMAIN_NAME: Final = (
    rf"(?:(?>{_DOMAIN_CHAR}(?:[^{_NOT_DOMAIN_BODY}]{{0,{_MAX_LABEL - 2}}}{_DOMAIN_CHAR})?)\.)"
)


def _tld_pattern(tlds: str) -> str:
    """A TLD from the whitespace-separated list, as a prefix tree: (?:c(?:o(?:m|op|)|...)|...)."""
    # A flat alternation of ~1,600 words costs a regex engine ~30 µs per try, and the domain
    # pattern tries a TLD after every label it backs off from; the tree costs ~1 µs. Longer words
    # come before the end of a shorter one ("|)" last), so the longest TLD is tried first and
    # shorter ones after, as in twitter-text's alternation (嘉里大酒店 before 嘉里).
    tree: dict[str, Any] = {}
    for tld in tlds.split():
        node = tree
        for char in tld:
            node = node.setdefault(char, {})
        node[""] = {}

    def build(node: dict[str, Any]) -> str:
        branches = [
            regex.escape(char) + build(child) for char, child in sorted(node.items()) if char
        ]
        if "" in node:
            branches.append("")
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    return rf"(?:{build(tree)}(?=[^0-9a-zA-Z@+-]|$))"


_GTLD: Final = _tld_pattern(_GTLDS)
_CCTLD: Final = _tld_pattern(_CCTLDS)
_PUNYCODE: Final = r"(?:xn--[\-0-9a-z]+)"
_DOMAIN: Final = (
    rf"(?:{_SUBDOMAIN}{{0,{_MAX_SUBDOMAINS}}}{_DOMAIN_NAME}(?:{_GTLD}|{_CCTLD}|{_PUNYCODE}))"
)
_ASCII_DOMAIN: Final = (
    rf"(?:(?>[\-a-z0-9{_LATIN_ACCENTS}]{{1,{_MAX_LABEL}}})\.){{1,{_MAX_SUBDOMAINS + 1}}}"
    rf"(?:{_GTLD}|{_CCTLD}|{_PUNYCODE})"
)

_PATH_CHAR: Final = rf"[a-z{_CYRILLIC}0-9!*';:=+,.$/%#\[\]\-\u2013_~@|&{_LATIN_ACCENTS}]"
_BALANCED_PARENS: Final = rf"\((?:{_PATH_CHAR}+|(?:{_PATH_CHAR}*\({_PATH_CHAR}+\){_PATH_CHAR}*))\)"
# The last character of a path (so "/foo." leaves the full stop out).
_PATH_END: Final = rf"[+\-a-z{_CYRILLIC}0-9=_#/{_LATIN_ACCENTS}]"
# twitter-text splices its "ending character or balanced parens" alternation into the path pattern
# without brackets, so a path piece is "chars (parens chars)* ending-char" OR bare "(parens)":
# "/a(b)" is a path, "/%(b)" ends after the '/'. Kept as it is to find the same URLs.
_PATH: Final = (
    rf"(?:(?:{_PATH_CHAR}*(?:{_BALANCED_PARENS}{_PATH_CHAR}*)*{_PATH_END}|(?:{_BALANCED_PARENS}))"
    rf"|(?:@{_PATH_CHAR}+/))"
)
_QUERY_CHARS: Final = r"[a-z0-9!?*'@();:&=+$/%#\[\]\-_.,~|]"
_QUERY_END: Final = r"[a-z0-9\-_&=#/]"
_URL_PRECEDING: Final = rf"(?:[^A-Za-z0-9@＠$#＃{_INVALID_CHARS}]|[{_DIRECTIONAL}]|^)"


class _UrlPatterns(NamedTuple):
    url: Any
    ascii_domain: Any
    tco: Any


@functools.cache
def _url_patterns() -> _UrlPatterns:
    """The URL patterns, compiled on first use: about 0.1 s (the TLD lists), which most runs
    never need (only text where a URL may cover a hashtag) and every command's start would pay.
    """
    # twitter-text's extractUrl. The path repetition is possessive (as in the Java port):
    # nothing after it can fail, so giving back path characters could never give another match.
    return _UrlPatterns(
        url=regex.compile(
            rf"(?P<before>{_URL_PRECEDING})"
            rf"(?P<url>(?P<protocol>https?://)?(?P<domain>{_DOMAIN})(?::[0-9]+)?"
            rf"(?P<path>/{_PATH}*+)?(?:\?{_QUERY_CHARS}*{_QUERY_END})?)",
            regex.IGNORECASE,
        ),
        ascii_domain=regex.compile(_ASCII_DOMAIN, regex.IGNORECASE),
        tco=regex.compile(
            rf"https?://t\.co/([a-z0-9]+)(?:\?{_QUERY_CHARS}*{_QUERY_END})?", regex.IGNORECASE
        ),
    )


_IDNA_DOTS_RE: Final = regex.compile(r"[\u3002\uFF0E\uFF61]")

_MAX_URL_LENGTH: Final = 4096
_MAX_TCO_SLUG_LENGTH: Final = 40
_DEFAULT_PROTOCOL_LENGTH: Final = len("https://")


def _label_is_valid(label: str) -> bool:
    # twitter-text's light IDNA check: each label, punycode-encoded as punycode.js would (which
    # also splits on the ideographic full stops), must be 1 to 63 characters long.
    length = 0
    for part in _IDNA_DOTS_RE.split(label):
        if part.isascii():
            length += len(part) + 1
        else:
            try:
                length += len(part.encode("punycode")) + 5  # "xn--" and the joining dot
            except UnicodeError:  # pragma: no cover - the codec takes any code point
                return False
    length -= 1
    return 1 <= length <= _MAX_LABEL


def _is_valid_url(url: str, protocol_length: int, domain: str) -> bool:
    if domain.startswith("xn--") and _url_patterns().ascii_domain.search(domain) is None:
        return False
    if not all(_label_is_valid(label) for label in domain.split(".")):
        return False
    length = protocol_length + len(url)
    if length * 2 > _MAX_URL_LENGTH:
        # The limit counts UTF-16 code units; only long URLs need the exact count.
        length += sum(1 for char in url if ord(char) > 0xFFFF)
    return length <= _MAX_URL_LENGTH


def _url_spans(text: str, pos: int, endpos: int) -> list[tuple[int, int]]:
    """The (start, end) of each URL that twitter-text finds in ``text[pos:endpos]``."""
    spans: list[tuple[int, int]] = []
    patterns = _url_patterns()
    for match in patterns.url.finditer(text, pos, endpos):
        url: str = match.group("url")
        protocol: str | None = match.group("protocol")
        domain: str = match.group("domain")
        start: int = match.start("url")
        end: int = match.end()
        length = len(protocol) if protocol else _DEFAULT_PROTOCOL_LENGTH
        if not _is_valid_url(url, length, domain):
            continue
        if protocol:
            tco = patterns.tco.match(url)
            if tco is not None:
                # A t.co link ends after its slug and query: no extra path characters.
                if len(tco.group(1)) > _MAX_TCO_SLUG_LENGTH:
                    continue
                end = start + tco.end()
            spans.append((start, end))
            continue
        # Without a protocol only ASCII domains count, and not right after "-_./".
        before: str = match.group("before")
        if before and before in "-_./":
            continue
        domain_start: int = match.start("domain")
        found = 0
        search_from = 0
        for ascii_domain in patterns.ascii_domain.finditer(domain):
            # twitter-text locates each ASCII domain with indexOf, which finds the first copy of
            # it (the match itself or an earlier one that was not a match), so do the same.
            found_text: str = ascii_domain.group()
            found_at = domain.find(found_text, search_from)
            search_from = found_at + len(found_text)
            spans.append((domain_start + found_at, domain_start + search_from))
            found += 1
        if found and match.group("path"):
            # The last domain takes the path (and any query after it), as in twitter-text.
            spans[-1] = (spans[-1][0], end)
    return spans


def _url_may_cover_hashtag(text: str, has_wide_hash: bool) -> bool:
    """False when no URL in ``text`` can cover a hash sign (a quick, conservative test)."""
    # A URL covering an ASCII '#' has it in its path or query: a '.' (in the domain), then a '/' or
    # '?', then the '#'. Usually the link comes after the hashtags and this rules it out.
    # A '＃' is a domain character to twitter-text, so only '.' and '/' somewhere are needed.
    dot = text.find(".")
    if dot < 0:
        return False
    if has_wide_hash:
        return "/" in text
    slash = text.find("/", dot)
    question = text.find("?", dot)
    if slash < 0:
        if question < 0:
            return False
        slash = question
    elif 0 <= question < slash:
        slash = question
    return text.find("#", slash) >= 0


def _stretch_end(text: str, start: int) -> int:
    """The index of the first space or line feed at or after ``start``, else ``len(text)``."""
    space = text.find(" ", start)
    newline = text.find("\n", start)
    if space < 0:
        return len(text) if newline < 0 else newline
    return space if newline < 0 or space < newline else newline


def _drop_hashtags_in_urls(text: str, tags: list[str], starts: list[int]) -> list[str]:
    """Drop the hashtags (``tags``, whose hash signs are at ``starts``) that overlap a URL."""
    # No URL holds a space or a line feed (nor any of _SPACES), so the URLs that twitter-text finds
    # between two such characters are the ones a scan of just that stretch finds, and only URLs in
    # a hashtag's own stretch can cover it. A URL covering an ASCII '#' has it in its path or query,
    # so a '.' and then a '/' or '?' come before the '#'; a '＃' is a domain character to
    # twitter-text, but a URL covers it only if it has a protocol or a path, so the stretch holds
    # a '.' and a '/'. Stretches without them are not scanned: most posts with links never run the
    # (large) URL expression.
    urls: list[tuple[int, int]] = []
    scanned_to = -1
    for start in starts:
        if start < scanned_to:
            continue
        stretch_start = max(text.rfind(" ", 0, start), text.rfind("\n", 0, start)) + 1
        if text[start] == "#":
            dot = text.find(".", stretch_start, start)
            if dot < 0 or (text.find("/", dot, start) < 0 and text.find("?", dot, start) < 0):
                continue
            stretch_end = _stretch_end(text, start)
        else:
            stretch_end = _stretch_end(text, start)
            if (
                text.find(".", stretch_start, stretch_end) < 0
                or text.find("/", stretch_start, stretch_end) < 0
            ):
                continue
        # Start on the separator, which can be the character before a URL.
        urls.extend(_url_spans(text, max(stretch_start - 1, 0), stretch_end))
        scanned_to = stretch_end
    if not urls:
        return tags
    # twitter-text's removeOverlappingEntities: sort by start (stably, hashtags first) and drop
    # whatever overlaps the last entity kept; then keep only the hashtags.
    entities = sorted(
        [(start, start + 1 + len(tag), tag) for start, tag in zip(starts, tags, strict=True)]
        + [(start, end, None) for start, end in urls],
        key=lambda entity: entity[0],
    )
    kept: list[str] = []
    previous_end = -1
    for start, end, tag in entities:
        if previous_end > start:
            continue
        previous_end = end
        if tag is not None:
            kept.append(tag)
    return kept


def _extract_exactly(text: str, first: int) -> list[str]:
    """extract_hashtags for text where a variation selector stands right before a hash sign."""
    # twitter-text consumes the character before each hash sign. A variation selector is also a
    # hashtag character (a mark), so when the previous match (kept or rejected) ended with one,
    # it is used up and cannot open the next hashtag ("#a\uFE0F#b" has no hashtag). Following
    # that needs the rejected matches too, so they are found and checked one by one here.
    tags: list[str] = []
    starts: list[int] = []
    previous_end = -1
    for match in _UNCHECKED_HASHTAG_RE.finditer(text, first):
        start: int = match.start()
        if start == previous_end and text[start - 1] in _VARIATION_SELECTORS:
            continue
        previous_end = match.end()
        if text.startswith(_INVALID_HASHTAG_END, previous_end):
            continue
        tags.append(match.group(1))
        starts.append(start)
    if not tags or not _url_may_cover_hashtag(text, "＃" in text):
        return tags
    return _drop_hashtags_in_urls(text, tags, starts)


def extract_hashtags(text: str) -> list[str]:
    """Return the hashtags in ``text``, in order, as written and without the ``#``/``＃``.

    Follows twitter-text's ``extractHashtags`` (see the module docstring). Duplicates are kept.
    Never raises for any ``str``, including ones holding lone surrogates.

    >>> extract_hashtags("So #happy today! #Sunday #2024 http://example.com/#anchor")
    ['happy', 'Sunday']
    """
    # Most posts hold no hashtag at all: a substring test is far cheaper than any regex.
    if "#" not in text and "＃" not in text:
        return []
    # Matching starts at the first hash sign (the lookbehinds still see what comes before it).
    hash_at = text.find("#")
    wide_at = text.find("＃")
    pattern: re.Pattern[str]
    if wide_at >= 0:
        pattern = _ANY_HASHTAG_RE
        first = wide_at if hash_at < 0 else min(hash_at, wide_at)
    else:
        first = hash_at
        if text.isascii() or _NON_ASCII_NEAR_HASH_RE.search(text, first) is None:
            # Every '#' is decided by ASCII characters alone, so the ASCII rules give the same
            # result, several times faster (typically English with emoji elsewhere).
            pattern = _ASCII_HASHTAG_RE
        else:
            pattern = _HASHTAG_RE
    if (
        pattern is not _ASCII_HASHTAG_RE
        and ("\ufe0e" in text or "\ufe0f" in text)
        and any(pair in text for pair in _SELECTOR_BEFORE_HASH)
    ):
        return _extract_exactly(text, first)
    if not _url_may_cover_hashtag(text, wide_at >= 0):
        found: list[str] = pattern.findall(text, first)
        return found
    tags: list[str] = []
    starts: list[int] = []
    for match in pattern.finditer(text, first):
        tags.append(match.group(1))
        starts.append(match.start())
    if not tags:
        return tags
    return _drop_hashtags_in_urls(text, tags, starts)


@functools.lru_cache(maxsize=1 << 16)
def normalize_hashtag(tag: str) -> str:
    """Return the key under which ``tag`` is counted: NFKC-normalized, then case-folded.

    So ``Café``, ``CAFÉ`` and ``cafe`` + combining acute are one tag, ``straße`` and ``STRASSE``
    are one tag, and fullwidth ``ＴＡＧ`` is ``tag``. Results are cached: the same few tags come
    up again and again, and this runs once per hashtag.
    """
    return unicodedata.normalize("NFKC", tag).casefold()
