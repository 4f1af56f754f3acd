/* The decoy's hot path in C: scan() and build() of fastpath.py, the same rules, the same
 * results. A unique flood datagram cost ~9 us of Python in these two functions (line split,
 * per-line partition, dict building, Via rewriting, byte formatting); here about two, most
 * of it building the Python dict and bytes the caller reads. Python keeps every decision
 * (guard, budget, strategy, events): this module only reads a datagram into (method,
 * {name: first value}, [Via values]) and formats an answer from such values; Batch below
 * does mmsg.Batch's recvmmsg/sendmmsg bookkeeping. Optional: fastpath.py and mmsg.py fall
 * back to their Python twins when this is not built; tests/decoy/test_cfast.py and
 * test_batch.py hold the two equal (vectors, a fuzzed corpus, real sockets) and run this
 * file under ASan and UBSan. Attacker bytes: every index is bounded by the buffer's
 * length; no fixed-size buffer receives attacker data (answers are sized first, then
 * written). Build: python -m sipdeflect.decoy.cbuild (./dev setup runs it). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#define MAX_MESSAGE 65535
#define MAX_HEADERS 128
#define MAX_BODY 65535
#define MAX_CSEQ 2147483647L

static PyObject *names_cache;   /* fastpath: sip.fields._names (raw name -> canonical str) */
static PyObject *canonical;     /* sip.fields.canonical_name */
static PyObject *parse_error;   /* errors.SipParseError */
static PyObject *methods;       /* known method bytes -> interned str */
static PyObject *mandatory;     /* tuple of the mandatory canonical names */
static PyObject *s_via, *s_to, *s_from, *s_callid, *s_cseq, *s_clen;

/* RFC 3261 25.1 token characters (sip.fields.TOKEN). */
static int is_token(unsigned char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-.!%*_+`'~", c) != NULL;
}

/* Python's bytes.split() whitespace and bytes.strip() default set. */
static int is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\x0b' || c == '\x0c';
}

static const char *find2(const char *p, const char *end, const char *pat, size_t n)
{
    if (end - p < (Py_ssize_t)n)
        return NULL;
    return memmem(p, (size_t)(end - p), pat, n);
}

/* The whitespace-separated words of [p, end) (bytes.split()): their count; (start, length)
 * of the first max - 1 of them and, in slot max - 1, of the last one seen. */
static int words(const char *p, const char *end, const char **start, Py_ssize_t *len, int max)
{
    int n = 0;
    while (p < end) {
        while (p < end && is_space((unsigned char)*p))
            p++;
        if (p >= end)
            break;
        const char *w = p;
        while (p < end && !is_space((unsigned char)*p))
            p++;
        int slot = n < max ? n : max - 1;
        start[slot] = w;
        len[slot] = p - w;
        n++;
    }
    return n;
}

static int all_digits(const char *p, Py_ssize_t n)
{
    if (n <= 0)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (p[i] < '0' || p[i] > '9')
            return 0;
    return 1;
}

static long small_int(const char *p, Py_ssize_t n) /* n <= 10 digits: fits a long */
{
    long v = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    return v;
}

/* Spellings seen in nearly every request, with what canonical_name() gives for them
 * (lower-cased long form): looked up without making a bytes object. */
static const char *const COMMON[][2] = {
    {"Via", "via"}, {"From", "from"}, {"To", "to"}, {"Call-ID", "call-id"},
    {"CSeq", "cseq"}, {"Contact", "contact"}, {"Max-Forwards", "max-forwards"},
    {"User-Agent", "user-agent"}, {"Content-Length", "content-length"},
    {"Accept", "accept"}, {"Authorization", "authorization"}, {"Expires", "expires"},
    {"Allow", "allow"}, {"Supported", "supported"}, {"Content-Type", "content-type"},
    {"Call-Id", "call-id"}, {"v", "via"}, {"f", "from"}, {"t", "to"}, {"i", "call-id"},
    {"m", "contact"}, {"l", "content-length"}, {"c", "content-type"},
    {"via", "via"}, {"from", "from"}, {"to", "to"}, {"call-id", "call-id"}, {"cseq", "cseq"},
    {"contact", "contact"}, {"max-forwards", "max-forwards"}, {"user-agent", "user-agent"},
    {"content-length", "content-length"},
};
#define N_COMMON (sizeof COMMON / sizeof COMMON[0])
static PyObject *common_names[N_COMMON];
static Py_ssize_t common_len[N_COMMON];

/* The canonical name of a raw header name: the common table, the shared cache, else
 * canonical_name(raw) (which validates and caches). New reference; NULL with no error
 * set = "defer". */
static PyObject *name_of(const char *p, Py_ssize_t n)
{
    for (size_t i = 0; i < N_COMMON; i++)
        if (common_len[i] == n && memcmp(COMMON[i][0], p, (size_t)n) == 0) {
            Py_INCREF(common_names[i]);
            return common_names[i];
        }
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *name = PyDict_GetItemWithError(names_cache, raw);
    if (name != NULL) {
        Py_DECREF(raw);
        Py_INCREF(name);
        return name;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(raw);
        return NULL;
    }
    name = PyObject_CallOneArg(canonical, raw);
    Py_DECREF(raw);
    if (name == NULL && PyErr_ExceptionMatches(parse_error))
        PyErr_Clear(); /* a bad header name: the SIP core decides */
    return name;
}

/* fastpath.scan(data) */
static PyObject *scan(PyObject *self, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() needs bytes");
        return NULL;
    }
    const char *data = PyBytes_AS_STRING(arg);
    Py_ssize_t size = PyBytes_GET_SIZE(arg);
    if (size > MAX_MESSAGE || (size > 0 && (data[0] == '\r' || data[0] == '\n')) ||
        (size >= 4 && memcmp(data, "SIP/", 4) == 0))
        Py_RETURN_NONE;
    const char *dend = data + size;
    const char *hend = find2(data, dend, "\r\n\r\n", 4);
    if (hend == NULL)
        Py_RETURN_NONE;
    /* Every CR and LF of the head must be a CRLF; no NUL; no folding; 1..128 breaks. */
    Py_ssize_t breaks = 0;
    for (const char *p = data; p < hend; p++) {
        char c = *p;
        if (c == '\r') {
            if (p + 1 >= hend || p[1] != '\n')
                Py_RETURN_NONE;
            if (p + 2 < hend && (p[2] == ' ' || p[2] == '\t'))
                Py_RETURN_NONE;
            breaks++;
            p++;
        } else if (c == '\n' || c == '\0') {
            Py_RETURN_NONE;
        }
    }
    if (breaks < 1 || breaks > MAX_HEADERS)
        Py_RETURN_NONE;
    const char *l0end = find2(data, hend, "\r\n", 2);
    const char *w[3];
    Py_ssize_t wl[3];
    if (words(data, l0end, w, wl, 3) != 3 || wl[2] != 7 || memcmp(w[2], "SIP/2.0", 7) != 0 ||
        memchr(w[1], ':', (size_t)wl[1]) == NULL)
        Py_RETURN_NONE;
    for (Py_ssize_t i = 0; i < wl[0]; i++)
        if (!is_token((unsigned char)w[0][i]))
            Py_RETURN_NONE;
    const char *mptr = w[0];
    Py_ssize_t mlen = wl[0];

    PyObject *method = NULL, *index = NULL, *vias = NULL, *out = NULL, *name = NULL;
    PyObject *raw_method = PyBytes_FromStringAndSize(mptr, mlen);
    if (raw_method == NULL)
        return NULL;
    method = PyDict_GetItemWithError(methods, raw_method);
    Py_DECREF(raw_method);
    if (method != NULL)
        Py_INCREF(method);
    else if (PyErr_Occurred())
        return NULL;
    else if ((method = PyUnicode_DecodeASCII(mptr, mlen, NULL)) == NULL)
        return NULL;
    index = PyDict_New();
    vias = PyList_New(0);
    if (index == NULL || vias == NULL)
        goto fail;

    const char *line = l0end + 2;
    while (line <= hend) {
        const char *lend = find2(line, hend, "\r\n", 2);
        if (lend == NULL)
            lend = hend;
        const char *colon = memchr(line, ':', (size_t)(lend - line));
        if (colon == NULL)
            goto defer; /* a header line without a colon */
        name = name_of(line, colon - line);
        if (name == NULL) {
            if (PyErr_Occurred())
                goto fail;
            goto defer;
        }
        const char *v = colon + 1, *ve = lend;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        PyObject *value = PyBytes_FromStringAndSize(v, ve - v);
        if (value == NULL)
            goto fail;
        int is_via = PyUnicode_Check(name) && PyUnicode_Compare(name, s_via) == 0;
        if (is_via && PyList_Append(vias, value) < 0) {
            Py_DECREF(value);
            goto fail;
        }
        int r = PyDict_SetDefault(index, name, value) == NULL ? -1 : 0;
        Py_DECREF(value);
        Py_CLEAR(name);
        if (r < 0)
            goto fail;
        line = lend + 2;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(mandatory); i++) {
        int has = PyDict_Contains(index, PyTuple_GET_ITEM(mandatory, i));
        if (has < 0)
            goto fail;
        if (!has)
            goto defer;
    }
    PyObject *cseq = PyDict_GetItemWithError(index, s_cseq); /* borrowed */
    if (cseq == NULL || !PyBytes_Check(cseq))
        goto defer_or_fail;
    {
        const char *cw[3];
        Py_ssize_t cl[3];
        const char *c = PyBytes_AS_STRING(cseq);
        if (words(c, c + PyBytes_GET_SIZE(cseq), cw, cl, 3) != 2 || !all_digits(cw[0], cl[0]) ||
            cl[0] > 10 || small_int(cw[0], cl[0]) > MAX_CSEQ || cl[1] != mlen ||
            memcmp(cw[1], mptr, (size_t)mlen) != 0)
            goto defer;
    }
    PyObject *clen = PyDict_GetItemWithError(index, s_clen);
    if (clen == NULL && PyErr_Occurred())
        goto fail;
    if (clen != NULL) {
        if (!PyBytes_Check(clen))
            goto defer;
        const char *c = PyBytes_AS_STRING(clen);
        Py_ssize_t n = PyBytes_GET_SIZE(clen);
        if (!all_digits(c, n) || n > 9 || small_int(c, n) > MAX_BODY ||
            small_int(c, n) > size - (hend - data) - 4)
            goto defer;
    }
    out = PyTuple_Pack(3, method, index, vias);
    Py_DECREF(method);
    Py_DECREF(index);
    Py_DECREF(vias);
    return out;
defer_or_fail:
    if (PyErr_Occurred())
        goto fail;
defer:
    Py_XDECREF(name);
    Py_XDECREF(method);
    Py_XDECREF(index);
    Py_XDECREF(vias);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(name);
    Py_XDECREF(method);
    Py_XDECREF(index);
    Py_XDECREF(vias);
    return NULL;
}

/* -- build ------------------------------------------------------------------------------ */

static unsigned long crc_table[256];

static void crc_init(void)
{
    for (unsigned long n = 0; n < 256; n++) {
        unsigned long c = n;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? 0xEDB88320UL ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

/* zlib.crc32(buf, start) */
static unsigned long crc32_of(const char *p, Py_ssize_t n, unsigned long start)
{
    unsigned long c = start ^ 0xFFFFFFFFUL;
    for (Py_ssize_t i = 0; i < n; i++)
        c = crc_table[(c ^ (unsigned char)p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFUL;
}

/* A growable output buffer (sized generously, checked on every write). */
typedef struct {
    char *p;
    Py_ssize_t len, cap;
} Buf;

static int put(Buf *b, const char *s, Py_ssize_t n)
{
    if (n < 0)
        return -1;
    if (b->len + n > b->cap) {
        Py_ssize_t cap = (b->cap + n) * 2;
        char *q = PyMem_Realloc(b->p, (size_t)cap);
        if (q == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, (size_t)n);
    b->len += n;
    return 0;
}

static int puts_(Buf *b, const char *s) { return put(b, s, (Py_ssize_t)strlen(s)); }

/* Value bytes, with CR, LF and NUL turned into spaces when `unsafe` (build's _UNSAFE.sub). */
static int put_value(Buf *b, const char *s, Py_ssize_t n, int unsafe)
{
    Py_ssize_t at = b->len;
    if (put(b, s, n) < 0)
        return -1;
    if (unsafe)
        for (Py_ssize_t i = at; i < b->len; i++)
            if (b->p[i] == '\r' || b->p[i] == '\n' || b->p[i] == '\0')
                b->p[i] = ' ';
    return 0;
}

/* ASCII-only case-insensitive equality (bytes.lower(), re.IGNORECASE on bytes): strncasecmp
 * would follow the C locale, and a Turkish one lower-cases 'I' differently. */
static int ascii_ieq(const char *s, const char *lower, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = s[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c + 32);
        if (c != lower[i])
            return 0;
    }
    return 1;
}

static void strip_ws(const char **s, const char **e)
{
    while (*s < *e && is_space((unsigned char)**s))
        (*s)++;
    while (*e > *s && is_space((unsigned char)(*e)[-1]))
        (*e)--;
}

/* sip.build.top_via_with_source(via, host, port) appended to b. */
static int put_top_via(Buf *b, const char *v, const char *ve, const char *host,
                       Py_ssize_t hlen, long port, int unsafe)
{
    const char *semi = memchr(v, ';', (size_t)(ve - v));
    const char *first_end = semi ? semi : ve;
    /* _sent_by_host(first): the last whitespace word when there are at least two. */
    const char *sb = NULL;
    Py_ssize_t sbl = 0;
    if (words(v, first_end, &sb, &sbl, 1) < 2)
        sbl = 0;
    const char *hs = "";
    Py_ssize_t hl = 0;
    if (sbl > 0 && sb[0] == '[') {
        /* sent_by[1 : sent_by.find(b"]")]: find -1 gives [1:-1] */
        const char *rb = memchr(sb, ']', (size_t)sbl);
        Py_ssize_t stop = rb ? rb - sb : sbl - 1;
        if (stop > 1) {
            hs = sb + 1;
            hl = stop - 1;
        }
    } else if (sbl > 0) {
        const char *c = memchr(sb, ':', (size_t)sbl);
        hs = sb;
        hl = c ? c - sb : sbl;
    }
    int want_received = !(hl == hlen && memcmp(hs, host, (size_t)hl) == 0);
    if (put_value(b, v, first_end - v, unsafe) < 0)
        return -1;
    const char *p = semi;
    while (p != NULL && p < ve) {
        const char *ps = p + 1;
        const char *pe = memchr(ps, ';', (size_t)(ve - ps));
        if (pe == NULL)
            pe = ve;
        const char *eq = memchr(ps, '=', (size_t)(pe - ps));
        const char *ns = ps, *ne = eq ? eq : pe;
        strip_ws(&ns, &ne);
        Py_ssize_t nl = ne - ns;
        if (nl == 8 && ascii_ieq(ns, "received", 8)) {
            /* replaced below */
        } else if (nl == 5 && ascii_ieq(ns, "rport", 5) && eq == NULL) {
            char num[32];
            int k = snprintf(num, sizeof num, ";rport=%ld", port);
            if (put(b, num, k) < 0)
                return -1;
            want_received = 1;
        } else {
            if (put(b, ";", 1) < 0 || put_value(b, ps, pe - ps, unsafe) < 0)
                return -1;
        }
        p = pe;
    }
    if (want_received && (puts_(b, ";received=") < 0 || put_value(b, host, hlen, unsafe) < 0))
        return -1;
    return 0;
}

/* sip.fields.split_list over [v, ve), then the top Via rewritten, joined by ", ". */
static int put_via_list(Buf *b, const char *v, const char *ve, const char *host,
                        Py_ssize_t hlen, long port, int unsafe)
{
    if (memchr(v, ',', (size_t)(ve - v)) == NULL)
        return put_top_via(b, v, ve, host, hlen, port, unsafe);
    int quoted = 0, angle = 0, escaped = 0, first = 1;
    const char *start = v;
    for (const char *p = v;; p++) {
        int at_end = p >= ve;
        int cut = at_end;
        if (!at_end) {
            char ch = *p;
            if (escaped)
                escaped = 0;
            else if (quoted) {
                if (ch == '\\')
                    escaped = 1;
                else if (ch == '"')
                    quoted = 0;
            } else if (ch == '"')
                quoted = 1;
            else if (ch == '<')
                angle = 1;
            else if (ch == '>')
                angle = 0;
            else if (ch == ',' && !angle)
                cut = 1;
        }
        if (cut) {
            const char *s = start, *e = p;
            strip_ws(&s, &e);
            if (e > s) {
                if (!first && puts_(b, ", ") < 0)
                    return -1;
                if (first ? put_top_via(b, s, e, host, hlen, port, unsafe) < 0
                          : put_value(b, s, e - s, unsafe) < 0)
                    return -1;
                first = 0;
            }
            start = p + 1;
        }
        if (at_end)
            break;
    }
    if (first) { /* split_list gave nothing: fastpath.build fails the same way */
        PyErr_SetString(PyExc_IndexError, "list assignment index out of range");
        return -1;
    }
    return 0;
}

/* build's _TAG = rb";\s*tag\s*=" (ignore case), searched from `from`. */
static int has_tag(const char *s, Py_ssize_t n, Py_ssize_t from)
{
    for (Py_ssize_t i = from; i < n; i++) {
        if (s[i] != ';')
            continue;
        Py_ssize_t j = i + 1;
        while (j < n && is_space((unsigned char)s[j]))
            j++;
        if (j + 3 > n || !ascii_ieq(s + j, "tag", 3))
            continue;
        j += 3;
        while (j < n && is_space((unsigned char)s[j]))
            j++;
        if (j < n && s[j] == '=')
            return 1;
    }
    return 0;
}

static int get_bytes(PyObject *index, PyObject *key, const char **s, Py_ssize_t *n)
{
    PyObject *v = PyDict_GetItemWithError(index, key);
    if (v == NULL) {
        if (PyErr_Occurred())
            return -1;
        *s = "";
        *n = 0;
        return 0;
    }
    if (!PyBytes_Check(v)) {
        PyErr_SetString(PyExc_TypeError, "header values must be bytes");
        return -1;
    }
    *s = PyBytes_AS_STRING(v);
    *n = PyBytes_GET_SIZE(v);
    return 0;
}

static int any_unsafe(const char *s, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++)
        if (s[i] == '\r' || s[i] == '\n' || s[i] == '\0')
            return 1;
    return 0;
}

/* build(index, vias, status, status_line, host, port, extra, clean) -> bytes
 * fastpath.build with the reason phrase's status line (b"SIP/2.0 200 OK\r\n") and the extra
 * header block (already escaped) given by the caller. */
static PyObject *build(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8 || !PyDict_Check(args[0]) || !PyList_Check(args[1]) ||
        !PyLong_Check(args[2]) || !PyBytes_Check(args[3]) || !PyUnicode_Check(args[4]) ||
        !PyLong_Check(args[5]) || !PyBytes_Check(args[6])) {
        PyErr_SetString(PyExc_TypeError,
                         "build(index: dict, vias: list, status: int, status_line: bytes, "
                         "host: str, port: int, extra: bytes, clean: bool)");
        return NULL;
    }
    PyObject *index = args[0], *vias = args[1];
    long status = PyLong_AsLong(args[2]);
    long port = PyLong_AsLong(args[5]);
    if ((status == -1 || port == -1) && PyErr_Occurred())
        return NULL;
    int clean = PyObject_IsTrue(args[7]);
    if (clean < 0)
        return NULL;
    Py_ssize_t hlen;
    const char *host = PyUnicode_AsUTF8AndSize(args[4], &hlen);
    if (host == NULL)
        return NULL;
    const char *fr, *to, *ci, *cs;
    Py_ssize_t frn, ton, cin, csn;
    if (get_bytes(index, s_from, &fr, &frn) < 0 || get_bytes(index, s_to, &to, &ton) < 0 ||
        get_bytes(index, s_callid, &ci, &cin) < 0 || get_bytes(index, s_cseq, &cs, &csn) < 0)
        return NULL;
    Py_ssize_t nvias = PyList_GET_SIZE(vias);
    for (Py_ssize_t i = 0; i < nvias; i++)
        if (!PyBytes_Check(PyList_GET_ITEM(vias, i))) {
            PyErr_SetString(PyExc_TypeError, "Via values must be bytes");
            return NULL;
        }
    int unsafe = 0;
    if (!clean) {
        /* _UNSAFE over the rewritten Vias and the fixed values; the rewrite adds only the
         * host (a str we were given) and digits, so testing the inputs is the same test. */
        unsafe = any_unsafe(fr, frn) || any_unsafe(to, ton) || any_unsafe(ci, cin) ||
                 any_unsafe(cs, csn) || any_unsafe(host, hlen);
        for (Py_ssize_t i = 0; !unsafe && i < nvias; i++) {
            PyObject *v = PyList_GET_ITEM(vias, i);
            unsafe = any_unsafe(PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v));
        }
    }
    Buf b = {NULL, 0, 0};
    Py_ssize_t guess = 160 + frn + ton + cin + csn + PyBytes_GET_SIZE(args[3]) +
                       PyBytes_GET_SIZE(args[6]) + hlen * 2;
    for (Py_ssize_t i = 0; i < nvias; i++)
        guess += PyBytes_GET_SIZE(PyList_GET_ITEM(vias, i)) + 8;
    b.p = PyMem_Malloc((size_t)guess);
    if (b.p == NULL)
        return PyErr_NoMemory();
    b.cap = guess;
    if (put(&b, PyBytes_AS_STRING(args[3]), PyBytes_GET_SIZE(args[3])) < 0)
        goto fail;
    for (Py_ssize_t i = 0; i < nvias; i++) {
        PyObject *v = PyList_GET_ITEM(vias, i);
        const char *s = PyBytes_AS_STRING(v);
        Py_ssize_t n = PyBytes_GET_SIZE(v);
        if (puts_(&b, "Via: ") < 0)
            goto fail;
        if (i == 0 ? put_via_list(&b, s, s + n, host, hlen, port, unsafe) < 0
                   : put_value(&b, s, n, unsafe) < 0)
            goto fail;
        if (puts_(&b, "\r\n") < 0)
            goto fail;
    }
    if (puts_(&b, "From: ") < 0 || put_value(&b, fr, frn, unsafe) < 0 ||
        puts_(&b, "\r\nTo: ") < 0 || put_value(&b, to, ton, unsafe) < 0)
        goto fail;
    Py_ssize_t gt = -1;
    for (Py_ssize_t i = ton - 1; i >= 0; i--)
        if (to[i] == '>') {
            gt = i;
            break;
        }
    if (status != 100 && !has_tag(to, ton, gt + 1)) {
        unsigned long crc = crc32_of(fr, frn, crc32_of(ci, cin, 0));
        char tag[24];
        int k = snprintf(tag, sizeof tag, ";tag=%08lx", crc & 0xFFFFFFFFUL);
        if (put(&b, tag, k) < 0)
            goto fail;
    }
    if (puts_(&b, "\r\nCall-ID: ") < 0 || put_value(&b, ci, cin, unsafe) < 0 ||
        puts_(&b, "\r\nCSeq: ") < 0 || put_value(&b, cs, csn, unsafe) < 0 ||
        puts_(&b, "\r\n") < 0 ||
        put(&b, PyBytes_AS_STRING(args[6]), PyBytes_GET_SIZE(args[6])) < 0 ||
        puts_(&b, "Content-Length: 0\r\n\r\n") < 0)
        goto fail;
    PyObject *out = PyBytes_FromStringAndSize(b.p, b.len);
    PyMem_Free(b.p);
    return out;
fail:
    PyMem_Free(b.p);
    return NULL;
}

/* -- Batch: mmsg.Batch's recvmmsg/sendmmsg slots, with the per-message work in C ---------
 * Same layout and rules as mmsg.py (see its opening comment): n receive slots of 64 KiB
 * (an anonymous mapping, touched only as far as datagrams reach), 32-byte name and 64-byte
 * control slots; recv() blocks for one datagram (MSG_WAITFORONE) with the GIL released
 * and returns [(data, source, ancillary)], sources and ancillary data decoded by the
 * Python functions given (cached per distinct raw value, bounded); send() writes each
 * reply into its request's slot and sends it to that request's own sockaddr. */

#define B_MAX_DATAGRAM 65536
#define B_NAME_SIZE 32
#define B_CONTROL_SIZE 64
#define B_CACHE_CAP 65536

typedef struct {
    PyObject_HEAD
    int fd;
    int n;
    char *data;
    char *names;
    char *controls;
    struct iovec *iov, *siov;
    struct mmsghdr *hdrs, *shdrs;
    int *slot_of; /* packet index (of the last recv) -> receive slot */
    int nslots;
    PyObject *slots; /* the same as a list, for tests and mmsg.Batch's API */
    PyObject *names_view;
    PyObject *sources, *ancillary, *decode_sockaddr, *decode_control;
    Py_ssize_t send_errors, truncated;
} BatchObject;

static void Batch_dealloc(BatchObject *self)
{
    if (self->data != NULL && self->data != MAP_FAILED)
        munmap(self->data, (size_t)self->n * B_MAX_DATAGRAM);
    PyMem_Free(self->names);
    PyMem_Free(self->controls);
    PyMem_Free(self->iov);
    PyMem_Free(self->siov);
    PyMem_Free(self->hdrs);
    PyMem_Free(self->shdrs);
    PyMem_Free(self->slot_of);
    Py_XDECREF(self->slots);
    Py_XDECREF(self->names_view);
    Py_XDECREF(self->sources);
    Py_XDECREF(self->ancillary);
    Py_XDECREF(self->decode_sockaddr);
    Py_XDECREF(self->decode_control);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Batch_init(BatchObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"fd", "n", "decode_sockaddr", "decode_control", NULL};
    int fd, n;
    PyObject *ds, *dc;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOO", kwlist, &fd, &n, &ds, &dc))
        return -1;
    if (n < 1 || n > 1024 || fd < 0) {
        PyErr_SetString(PyExc_ValueError, "need fd >= 0 and 1 <= n <= 1024");
        return -1;
    }
    if (self->data != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Batch is already initialised");
        return -1;
    }
    self->fd = fd;
    self->n = n;
    self->data = mmap(NULL, (size_t)n * B_MAX_DATAGRAM, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (self->data == MAP_FAILED) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    self->names = PyMem_Calloc((size_t)n, B_NAME_SIZE);
    self->controls = PyMem_Calloc((size_t)n, B_CONTROL_SIZE);
    self->iov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    self->siov = PyMem_Calloc((size_t)n, sizeof(struct iovec));
    self->hdrs = PyMem_Calloc((size_t)n, sizeof(struct mmsghdr));
    self->shdrs = PyMem_Calloc((size_t)n, sizeof(struct mmsghdr));
    self->slot_of = PyMem_Calloc((size_t)n, sizeof(int));
    self->slots = PyList_New(0);
    self->sources = PyDict_New();
    self->ancillary = PyDict_New();
    if (!self->names || !self->controls || !self->iov || !self->siov || !self->hdrs ||
        !self->shdrs || !self->slot_of) {
        PyErr_NoMemory();
        return -1;
    }
    if (!self->slots || !self->sources || !self->ancillary)
        return -1;
    self->names_view = PyMemoryView_FromMemory(self->names, (Py_ssize_t)n * B_NAME_SIZE,
                                               PyBUF_WRITE);
    if (self->names_view == NULL)
        return -1;
    Py_INCREF(ds);
    Py_INCREF(dc);
    self->decode_sockaddr = ds;
    self->decode_control = dc;
    for (int i = 0; i < n; i++) {
        self->iov[i].iov_base = self->data + (size_t)i * B_MAX_DATAGRAM;
        self->iov[i].iov_len = B_MAX_DATAGRAM;
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        h->msg_name = self->names + (size_t)i * B_NAME_SIZE;
        h->msg_iov = &self->iov[i];
        h->msg_iovlen = 1;
        h->msg_control = self->controls + (size_t)i * B_CONTROL_SIZE;
    }
    return 0;
}

/* cache[raw] or decode(raw), remembered (cleared when full). New reference. */
static PyObject *cached(PyObject *cache, PyObject *decode, const char *p, Py_ssize_t n)
{
    PyObject *raw = PyBytes_FromStringAndSize(p, n);
    if (raw == NULL)
        return NULL;
    PyObject *got = PyDict_GetItemWithError(cache, raw);
    if (got != NULL) {
        Py_INCREF(got);
        Py_DECREF(raw);
        return got;
    }
    if (PyErr_Occurred() || (got = PyObject_CallOneArg(decode, raw)) == NULL) {
        Py_DECREF(raw);
        return NULL;
    }
    if (PyDict_GET_SIZE(cache) >= B_CACHE_CAP)
        PyDict_Clear(cache);
    int r = PyDict_SetItem(cache, raw, got);
    Py_DECREF(raw);
    if (r < 0) {
        Py_DECREF(got);
        return NULL;
    }
    return got;
}

static PyObject *Batch_recv(BatchObject *self, PyObject *unused)
{
    for (int i = 0; i < self->n; i++) {
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        h->msg_namelen = B_NAME_SIZE;
        h->msg_controllen = B_CONTROL_SIZE;
        h->msg_flags = 0;
    }
    int k;
    Py_BEGIN_ALLOW_THREADS
    k = recvmmsg(self->fd, self->hdrs, (unsigned int)self->n, MSG_WAITFORONE, NULL);
    Py_END_ALLOW_THREADS
    self->nslots = 0;
    if (PyList_SetSlice(self->slots, 0, PyList_GET_SIZE(self->slots), NULL) < 0)
        return NULL;
    if (k < 0)
        return PyErr_SetFromErrno(PyExc_OSError);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < k; i++) {
        struct msghdr *h = &self->hdrs[i].msg_hdr;
        if (h->msg_flags & MSG_TRUNC) {
            self->truncated++;
            continue;
        }
        if (h->msg_namelen == 0) /* shutdown() wakes the call with an empty, nameless read */
            continue;
        Py_ssize_t namelen = h->msg_namelen > B_NAME_SIZE ? B_NAME_SIZE : h->msg_namelen;
        Py_ssize_t clen = h->msg_controllen > B_CONTROL_SIZE ? B_CONTROL_SIZE
                                                             : (Py_ssize_t)h->msg_controllen;
        Py_ssize_t size = self->hdrs[i].msg_len > B_MAX_DATAGRAM ? B_MAX_DATAGRAM
                                                                 : self->hdrs[i].msg_len;
        PyObject *src = cached(self->sources, self->decode_sockaddr, h->msg_name, namelen);
        PyObject *anc = src ? cached(self->ancillary, self->decode_control, h->msg_control, clen)
                            : NULL;
        PyObject *data =
            anc ? PyBytes_FromStringAndSize(self->data + (size_t)i * B_MAX_DATAGRAM, size) : NULL;
        PyObject *item = data ? PyTuple_Pack(3, data, src, anc) : NULL;
        PyObject *slot = item ? PyLong_FromLong(i) : NULL;
        int ok = slot != NULL && PyList_Append(out, item) == 0 &&
                 PyList_Append(self->slots, slot) == 0;
        Py_XDECREF(src);
        Py_XDECREF(anc);
        Py_XDECREF(data);
        Py_XDECREF(item);
        Py_XDECREF(slot);
        if (!ok) {
            Py_DECREF(out);
            return NULL;
        }
        self->slot_of[self->nslots++] = i;
    }
    return out;
}

static PyObject *Batch_send(BatchObject *self, PyObject *replies)
{
    PyObject *seq = PySequence_Fast(replies, "send() needs a sequence of (index, bytes)");
    if (seq == NULL)
        return NULL;
    Py_ssize_t m = PySequence_Fast_GET_SIZE(seq);
    int count = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        PyObject *pair = PySequence_Fast_GET_ITEM(seq, j);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyBytes_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "send() needs (index, bytes) pairs");
            goto fail;
        }
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(pair, 0));
        if (i == -1 && PyErr_Occurred())
            goto fail;
        if (i < 0)
            i += self->nslots; /* as list indexing does */
        if (i < 0 || i >= self->nslots) {
            PyErr_SetString(PyExc_IndexError, "no such packet in the last recv()");
            goto fail;
        }
        if (count >= self->n) {
            PyErr_SetString(PyExc_ValueError, "more replies than slots");
            goto fail;
        }
        int slot = self->slot_of[i];
        PyObject *b = PyTuple_GET_ITEM(pair, 1);
        Py_ssize_t size = PyBytes_GET_SIZE(b);
        if (size > B_MAX_DATAGRAM) {
            self->send_errors++;
            continue;
        }
        char *at = self->data + (size_t)slot * B_MAX_DATAGRAM;
        memcpy(at, PyBytes_AS_STRING(b), (size_t)size);
        self->siov[count].iov_base = at;
        self->siov[count].iov_len = (size_t)size;
        struct msghdr *h = &self->shdrs[count].msg_hdr;
        memset(h, 0, sizeof *h);
        h->msg_name = self->names + (size_t)slot * B_NAME_SIZE;
        h->msg_namelen = self->hdrs[slot].msg_hdr.msg_namelen;
        h->msg_iov = &self->siov[count];
        h->msg_iovlen = 1;
        count++;
    }
    Py_DECREF(seq);
    long sent = 0;
    int done = 0;
    while (done < count) { /* each pass moves on by at least one message: bounded */
        int r;
        Py_BEGIN_ALLOW_THREADS
        r = sendmmsg(self->fd, self->shdrs + done, (unsigned int)(count - done), 0);
        Py_END_ALLOW_THREADS
        if (r <= 0) { /* the message at `done` failed (errno): skip it, send the rest */
            self->send_errors++;
            done++;
        } else {
            sent += r;
            done += r;
        }
    }
    return PyLong_FromLong(sent);
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef Batch_methods[] = {
    {"recv", (PyCFunction)Batch_recv, METH_NOARGS, "mmsg.Batch.recv"},
    {"send", (PyCFunction)Batch_send, METH_O, "mmsg.Batch.send"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Batch_members[] = {
    {"fd", T_INT, offsetof(BatchObject, fd), READONLY, NULL},
    {"n", T_INT, offsetof(BatchObject, n), READONLY, NULL},
    {"send_errors", T_PYSSIZET, offsetof(BatchObject, send_errors), 0, NULL},
    {"truncated", T_PYSSIZET, offsetof(BatchObject, truncated), 0, NULL},
    {"slots", T_OBJECT, offsetof(BatchObject, slots), READONLY, NULL},
    {"names", T_OBJECT, offsetof(BatchObject, names_view), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject BatchType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "sipdeflect.decoy._cfast.Batch",
    .tp_basicsize = sizeof(BatchObject),
    .tp_dealloc = (destructor)Batch_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "mmsg.Batch with the per-message work in C (see mmsg.py)",
    .tp_methods = Batch_methods,
    .tp_members = Batch_members,
    .tp_init = (initproc)Batch_init,
    .tp_new = PyType_GenericNew,
};

/* configure(names, canonical_name, SipParseError, methods, mandatory) */
static PyObject *configure(PyObject *self, PyObject *args)
{
    PyObject *n, *c, *e, *m, *req;
    if (!PyArg_ParseTuple(args, "O!OOO!O!", &PyDict_Type, &n, &c, &e, &PyDict_Type, &m,
                          &PyTuple_Type, &req))
        return NULL;
    Py_INCREF(n);
    Py_INCREF(c);
    Py_INCREF(e);
    Py_INCREF(m);
    Py_INCREF(req);
    Py_XSETREF(names_cache, n);
    Py_XSETREF(canonical, c);
    Py_XSETREF(parse_error, e);
    Py_XSETREF(methods, m);
    Py_XSETREF(mandatory, req);
    Py_RETURN_NONE;
}

static PyMethodDef cfast_methods[] = {
    {"scan", scan, METH_O, "fastpath.scan(data) in C"},
    {"build", (PyCFunction)(void (*)(void))build, METH_FASTCALL, "fastpath.build core in C"},
    {"configure", configure, METH_VARARGS, "hand over the SIP core's tables"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef cfast_module = {
    PyModuleDef_HEAD_INIT, "_cfast", "The decoy's scan/build in C (see fastpath.py).", -1,
    cfast_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__cfast(void)
{
    crc_init();
    s_via = PyUnicode_InternFromString("via");
    s_to = PyUnicode_InternFromString("to");
    s_from = PyUnicode_InternFromString("from");
    s_callid = PyUnicode_InternFromString("call-id");
    s_cseq = PyUnicode_InternFromString("cseq");
    s_clen = PyUnicode_InternFromString("content-length");
    if (!s_via || !s_to || !s_from || !s_callid || !s_cseq || !s_clen)
        return NULL;
    for (size_t i = 0; i < N_COMMON; i++) {
        common_len[i] = (Py_ssize_t)strlen(COMMON[i][0]);
        common_names[i] = PyUnicode_InternFromString(COMMON[i][1]);
        if (common_names[i] == NULL)
            return NULL;
    }
    if (PyType_Ready(&BatchType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&cfast_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BatchType);
    if (PyModule_AddObject(m, "Batch", (PyObject *)&BatchType) < 0) {
        Py_DECREF(&BatchType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
