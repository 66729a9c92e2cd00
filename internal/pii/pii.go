// Package pii owns the redaction of personal data from text that goes into audit
// records: e-mail addresses, phone numbers, payment card numbers, national
// identification numbers (US SSN, UK National Insurance number) and IBANs are replaced
// by a bracketed label. It is tuned for transcripts and model request bodies: it must
// catch the data a caller speaks or types, and must leave alone the dates, times,
// versions, order numbers, prices, quantities, UUIDs and IP addresses that make a
// record useful.
//
// Detection works in passes over the parts of the text not yet claimed, so an earlier
// pass takes precedence over a later one:
//
//  1. e-mail addresses, then obfuscated ones: "jane.doe(at)example.com", "jane [at]
//     example [dot] com", and the spoken "jane dot doe at example dot com". The word
//     " at " is common, so after it every dot must be a " dot " word or bracketed and
//     the top-level domain a common one: "meet at noon", "look at this" and "we met at
//     amazon.com" stay (see obfuscated.go);
//  2. numbers spoken as words, as speech-to-text writes them: "four one one one ...",
//     "oh seven nine four six ...", "double five", separated by spaces, commas or
//     hyphens, in any case. The words are turned into digits and the number is
//     classified by them alone (card, SSN or phone; see classifySequence), and the
//     whole run of words is replaced. Fewer than eight digits ("one two three") and
//     digits that count up or down are never a number;
//  3. things that are never redacted and must not be mistaken for what follows: dates
//     (with an optional time) and IPv4 addresses. UUIDs, versions ("v1.37.2") and ids
//     ("ORD-2026-000123") need no such pass: digits glued to a letter or digit by '-',
//     '.', '_' or '/' are never the start or end of a number here;
//  4. IBANs (mod-97 checksum and the country's length), grouped by spaces or dashes;
//  5. digits spaced one by one ("4 1 1 1 1 1 ...", "0 7 9 4 6 1 2 3 4 5 6"): a run of
//     eight or more single digits separated by single spaces is read as one number and
//     classified like a spoken one;
//  6. card numbers: 13 to 19 digits, as one run or in groups starting with four digits
//     (separated by spaces, dashes or dots), that pass the Luhn check. Cards come before
//     phone numbers because a card number is the more sensitive reading of a long digit
//     run; a run that fails Luhn is not a card, and may still be redacted as a phone
//     number if it looks like one;
//  7. US SSNs and UK National Insurance numbers;
//  8. phone numbers: 7 to 15 digits written with a leading '+', with separators
//     (space, '.', '-') or an area code in parentheses, or an unseparated national
//     number with a trunk prefix 0 and 10 or 11 digits. An unseparated run without '+'
//     or trunk prefix is left alone: it is more often an id or a timestamp. So are
//     thousands groupings ("2 500 000") and lists: groups that are all round numbers
//     ("100 200 300 400 500") or that step by the same amount ("10 12 14 16").
//
// Only ASCII digits are recognised. Word boundaries are ASCII too, so numbers written
// directly against CJK text ("電話+81 3-1234-5678です") are still found. A label counts
// as the letters or digits it replaced, so Redact finds nothing new in its own output.
package pii

import (
	"regexp"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The labels that replace what was found.
const (
	Email      = "[EMAIL]"
	Phone      = "[PHONE]"
	Card       = "[CARD]"
	NationalID = "[NATIONAL_ID]"
	IBAN       = "[IBAN]"
)

// Letters of the scripts that write words with spaces between them. Han, kana and
// Hangul are left out on purpose: text in those scripts puts an address directly
// against the surrounding words, which would otherwise be swallowed into the match.
const (
	emailLetters = `\p{Latin}\p{Greek}\p{Cyrillic}\p{Armenian}\p{Hebrew}\p{Arabic}\p{Devanagari}`
	// At most 64 before the '@' (RFC 5321), so that the whole text and the windows around
	// each '@' (maxEmailLocal) find the same address in a long run of local-part characters.
	emailLocal = `[` + emailLetters + `0-9._%+\-]{1,64}`
	emailLabel = `[` + emailLetters + `0-9\-]+`
	emailTLD   = `[` + emailLetters + `]{2,}`
)

var (
	emailRe = regexp.MustCompile(emailLocal + `@` + emailLabel + `(?:\.` + emailLabel + `)*\.` + emailTLD)

	dateRe = regexp.MustCompile(`(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})(?:[T ]\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?`)
	ipv4Re = regexp.MustCompile(`\d{1,3}(?:\.\d{1,3}){3}`)

	ibanRe  = regexp.MustCompile(`(?i)[a-z]{2}\d{2}(?:[ \-]?[a-z0-9]){11,30}`)
	ssnRe   = regexp.MustCompile(`\d{3}[- ]\d{2}[- ]\d{4}`)
	ninoRe  = regexp.MustCompile(`(?i)[a-z]{2} ?\d{2} ?\d{2} ?\d{2} ?[a-d]`)
	phoneRe = regexp.MustCompile(`\+?(?:\(\d{1,5}\)[ .\-]?|\d{1,4}[ .\-]?\(\d{1,5}\)[ .\-]?)?\d+(?:[ .\-]\d+)*`)

	emailMatch = regexpMatcher(emailRe)
	dateMatch  = regexpMatcher(dateRe)
	ipv4Match  = regexpMatcher(ipv4Re)
	ibanMatch  = regexpMatcher(ibanRe)
	ssnMatch   = regexpMatcher(ssnRe)
	ninoMatch  = regexpMatcher(ninoRe)
	phoneMatch = regexpMatcher(phoneRe)
)

// A matcher returns the leftmost match in t, as regexp's FindStringIndex does, or a
// negative start when there is none.
type matcher func(t string) (start, end int)

func regexpMatcher(re *regexp.Regexp) matcher {
	return func(t string) (int, int) {
		loc := re.FindStringIndex(t)
		if loc == nil {
			return -1, -1
		}
		return loc[0], loc[1]
	}
}

// cardMatch is the regexp \d+(?:[ .\-]\d+)*, digit groups with single separators
// between them, written out: Go's regexp costs tens of nanoseconds a byte, and this
// pattern needs no regexp.
func cardMatch(t string) (int, int) {
	i := 0
	for i < len(t) && !isDigit(t[i]) {
		i++
	}
	if i == len(t) {
		return -1, -1
	}
	j := skipDigits(t, i)
	for j+1 < len(t) && (t[j] == ' ' || t[j] == '.' || t[j] == '-') && isDigit(t[j+1]) {
		j = skipDigits(t, j+1)
	}
	return i, j
}

func skipDigits(t string, i int) int {
	for i < len(t) && isDigit(t[i]) {
		i++
	}
	return i
}

// spacedMatch finds the leftmost run of eight or more single digits separated by single
// spaces, with a '+' before it if there is one: "0 7 9 4 6 1 2 3 4 5 6". Each digit
// stands alone, so the run ends before " 12/28" rather than inside it.
func spacedMatch(t string) (int, int) {
	single := func(i int) bool { // t[i] is a digit with no digit on either side
		return isDigit(t[i]) && (i == 0 || !isDigit(t[i-1])) && (i+1 == len(t) || !isDigit(t[i+1]))
	}
	for p := 0; p < len(t); p++ {
		if !single(p) {
			continue
		}
		q, n := p, 1
		for q+2 < len(t) && t[q+1] == ' ' && single(q+2) {
			q, n = q+2, n+1
		}
		if n >= minNumber {
			if p > 0 && t[p-1] == '+' {
				p--
			}
			return p, q + 1
		}
		p = q // a run starting inside this one would be shorter still
	}
	return -1, -1
}

// Redact returns s with personal data replaced by labels, or s itself when nothing was
// found. Text with no ASCII digit, no '@', no bracketed "at" or "dot", no word "dot"
// and no digit word where the spoken-number probes land cannot contain any of it and
// returns at once, without allocating.
func Redact(s string) string {
	return redact(s, false)
}

// redact is Redact; everywhere makes every pass search the whole text instead of its
// windows, probe every byte for spoken numbers and try every byte as the at marker of
// an obfuscated address: the reference the shortcuts are tested against.
func redact(s string, everywhere bool) string {
	hasAt := strings.IndexByte(s, '@') >= 0
	hasDigit := containsDigit(s)
	stride := spokenStride
	if everywhere {
		stride = 1
	}
	spokenFrom := firstSpokenProbe(s, stride)
	var obfuscated []int
	if everywhere {
		obfuscated = allPositions(s)
	} else {
		obfuscated = obfuscatedCandidates(s)
	}
	if !hasAt && !hasDigit && spokenFrom < 0 && len(obfuscated) == 0 {
		return s
	}
	r := redactor{s: s}
	all := []window{{0, len(s)}}
	if hasAt {
		ws := all
		if !everywhere {
			ws = atWindows(s)
		}
		r.pass(emailMatch, ws, r.email)
	}
	if len(obfuscated) > 0 {
		r.obfuscatedEmails(obfuscated)
	}
	if spokenFrom >= 0 {
		r.spoken(spokenFrom, stride)
	}
	if hasDigit {
		ws, iws := all, all
		if !everywhere {
			ws, iws = digitWindows(s), ibanWindows(s)
		}
		r.pass(dateMatch, ws, r.date)
		r.pass(ipv4Match, ws, r.ipv4)
		r.pass(ibanMatch, iws, r.iban)
		r.pass(spacedMatch, ws, r.spaced)
		r.pass(cardMatch, ws, r.card)
		r.pass(ssnMatch, ws, r.ssn)
		r.pass(ninoMatch, ws, r.nino)
		r.pass(phoneMatch, ws, r.phone)
	}
	return r.result()
}

// containsDigit reports whether s has an ASCII digit. Ten vectorised IndexByte scans
// beat one loop over the bytes several times.
func containsDigit(s string) bool {
	for c := byte('0'); c <= '9'; c++ {
		if strings.IndexByte(s, c) >= 0 {
			return true
		}
	}
	return false
}

// A window is a part of the text worth searching. Go's regexp costs tens of
// nanoseconds per byte searched, and most of a transcript is words; searching only
// near digits (or around an '@') keeps Redact several times faster. Whether a match is
// accepted is still decided against the whole text.
type window struct{ start, end int }

// Every digit-based pattern but the IBAN starts and ends within a few bytes of a digit
// ("QQ 12", "+(", "56 C") and has no more than a few bytes between two digits ("(0)20");
// windows padded by windowPad on each side merge across such gaps, with a margin.
// IBANs have windows of their own.
const windowPad = 8

// digitWindows returns the text around each run of digits, merged where they touch.
func digitWindows(s string) []window {
	var ws []window
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			continue
		}
		end := i + 1
		for end < len(s) && isDigit(s[end]) {
			end++
		}
		ws = addWindow(ws, window{max(0, i-windowPad), min(len(s), end+windowPad)})
		i = end
	}
	return ws
}

// maxIBANMatch is the longest text ibanRe can match: four characters, then up to 30
// each with a space before it. (A printed IBAN is at most 34 + 8.)
const maxIBANMatch = 4 + 30*2

// ibanWindows returns the text after each "two letters, two digits", where an IBAN
// starts. Its account part may be letters for most of its length (Qatar, Malta), so
// closeness to digits says nothing about where it ends.
func ibanWindows(s string) []window {
	var ws []window
	for i := 0; i+4 <= len(s); i++ {
		if isLetter(s[i]) && isLetter(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			ws = addWindow(ws, window{i, min(len(s), i+maxIBANMatch)})
		}
	}
	return ws
}

// maxEmailLocal bounds how far before an '@' an address is looked for: emailLocal allows
// 64 characters (RFC 5321), at most 4 bytes each.
const maxEmailLocal = 64 * utf8.UTFMax

// atWindows returns, around each '@', up to maxEmailLocal bytes before it and the rest
// of its whitespace-delimited token after it; an address never contains whitespace.
// The domain side is not capped: a cap there let the whole text find an address whose
// domain ran past the window (CI's FuzzRedact: a 2,700-byte label before ".om"). One
// long token is scanned once however many '@' it holds.
func atWindows(s string) []window {
	var ws []window
	tokenEnd := -1 // the end of the token the previous '@' was in
	for i := strings.IndexByte(s, '@'); i >= 0; {
		start := i
		for start > 0 && i-start < maxEmailLocal && !isSpace(s[start-1]) {
			start--
		}
		if i >= tokenEnd {
			tokenEnd = i + 1
			for tokenEnd < len(s) && !isSpace(s[tokenEnd]) {
				tokenEnd++
			}
		}
		ws = addWindow(ws, window{start, tokenEnd})
		next := strings.IndexByte(s[i+1:], '@')
		if next < 0 {
			break
		}
		i += 1 + next
	}
	return ws
}

func addWindow(ws []window, w window) []window {
	if n := len(ws); n > 0 && w.start <= ws[n-1].end {
		ws[n-1].end = max(ws[n-1].end, w.end)
		return ws
	}
	return append(ws, w)
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// span is a claimed part of the text: replaced by label, or kept verbatim when label is
// empty (a date, an address, ...), which stops later passes from looking inside it.
type span struct {
	start, end int
	label      string
}

type redactor struct {
	s     string
	spans []span // sorted by start, non-overlapping
}

// pass runs match over the parts of the windows not yet claimed and hands each match
// to visit, which may claim spans and returns where the search resumes.
func (r *redactor) pass(match matcher, windows []window, visit func(start, end int) (next int)) {
	r.eachGap(windows, func(lo, hi int) { r.search(match, lo, hi, visit) })
}

// eachGap calls f with each part of the windows that was not claimed when eachGap was
// called. f may claim spans inside the part it is given.
func (r *redactor) eachGap(windows []window, f func(lo, hi int)) {
	claimed := len(r.spans)
	k := 0 // the first claimed span that does not end before the current window
	for _, w := range windows {
		for k < claimed && r.spans[k].end <= w.start {
			k++
		}
		lo := w.start
		for j := k; lo < w.end; j++ {
			hi := w.end
			if j < claimed {
				hi = min(hi, r.spans[j].start)
			}
			if lo < hi {
				f(lo, hi)
			}
			if j >= claimed {
				break
			}
			lo = max(lo, r.spans[j].end)
		}
	}
	if len(r.spans) > claimed {
		r.sortSpans()
	}
}

func (r *redactor) sortSpans() {
	slices.SortFunc(r.spans, func(a, b span) int { return a.start - b.start })
}

// search runs match over s[lo:hi].
func (r *redactor) search(match matcher, lo, hi int, visit func(start, end int) (next int)) {
	for pos := lo; pos < hi; {
		start, end := match(r.s[pos:hi])
		if start < 0 {
			return
		}
		pos = max(visit(pos+start, pos+end), pos+start+1)
	}
}

func (r *redactor) claim(start, end int, label string) int {
	r.spans = append(r.spans, span{start, end, label})
	return end
}

func (r *redactor) result() string {
	var b strings.Builder
	last := 0
	for _, sp := range r.spans {
		if sp.label == "" {
			continue
		}
		if last == 0 {
			b.Grow(len(r.s))
		}
		b.WriteString(r.s[last:sp.start])
		b.WriteString(sp.label)
		last = sp.end
	}
	if last == 0 {
		return r.s
	}
	b.WriteString(r.s[last:])
	return b.String()
}

func (r *redactor) email(start, end int) int {
	return r.claim(start, end, Email)
}

// date protects a plausible calendar date, with its time if one follows.
func (r *redactor) date(start, end int) int {
	if !boundaryBefore(r.s, start) || !boundaryAfter(r.s, end) {
		return end
	}
	nums, seps := fields(r.s[start:end], 3)
	if seps[0] != seps[1] {
		return end
	}
	year, month, day := nums[2], min(nums[0], nums[1]), max(nums[0], nums[1])
	if nums[0] > 99 { // year first
		year, month, day = nums[0], nums[1], nums[2]
	}
	// Only a plausible date is kept: protecting "06-12-3456" would hide a phone number
	// from the phone pass. Day-month-year and month-day-year are both accepted, so one
	// of the two must be a month.
	if year < 1900 || year > 2099 || month < 1 || month > 12 || day < 1 || day > 31 {
		return end
	}
	return r.claim(start, end, "")
}

// fields reads the first n decimal numbers of s and the separator after each but the
// last.
func fields(s string, n int) (nums []int, seps []byte) {
	nums, seps = make([]int, 0, n), make([]byte, 0, n)
	v, in := 0, false
	for i := 0; i < len(s) && len(nums) < n; i++ {
		c := s[i]
		if isDigit(c) {
			v, in = v*10+int(c-'0'), true
			continue
		}
		if in {
			nums, seps = append(nums, v), append(seps, c)
			v, in = 0, false
		}
	}
	if in && len(nums) < n {
		nums = append(nums, v)
	}
	for len(nums) < n {
		nums = append(nums, 0)
	}
	return nums, seps
}

func (r *redactor) ipv4(start, end int) int {
	if !boundaryBefore(r.s, start) || !boundaryAfter(r.s, end) {
		return end
	}
	nums, _ := fields(r.s[start:end], 4)
	for _, n := range nums {
		if n > 255 {
			return end
		}
	}
	return r.claim(start, end, "")
}

// iban claims the country's length of alphanumerics from the match (the pattern may run
// on into the next word) when they end at a word boundary and pass mod-97. The groups
// may be separated by spaces or by dashes ("GB82-WEST-1234-...").
func (r *redactor) iban(start, end int) int {
	if !boundaryBefore(r.s, start) {
		return start + 1
	}
	want := ibanLength[strings.ToUpper(r.s[start:start+2])]
	if want == 0 {
		return start + 1
	}
	n, stop := 0, -1
	for i := start; i < end; i++ {
		if c := r.s[i]; c != ' ' && c != '-' {
			n++
		}
		if n == want {
			stop = i + 1
			break
		}
	}
	if stop < 0 || !boundaryAfter(r.s, stop) || !ibanChecksum(r.s[start:stop]) {
		return start + 1
	}
	return r.claim(start, stop, IBAN)
}

// ibanChecksum is the ISO 13616 check: move the first four characters to the end, read
// letters as 10..35, and the number must be 1 modulo 97. Spaces and dashes are skipped.
func ibanChecksum(s string) bool {
	compact := make([]byte, 0, 34)
	for i := 0; i < len(s); i++ {
		if s[i] != ' ' && s[i] != '-' {
			compact = append(compact, s[i])
		}
	}
	if len(compact) < 5 {
		return false
	}
	rem := 0
	for _, c := range append(compact[4:], compact[:4]...) {
		switch {
		case isDigit(c):
			rem = (rem*10 + int(c-'0')) % 97
		case isLetter(c):
			rem = (rem*100 + int(c|0x20-'a') + 10) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// card looks for card numbers in a run of digit groups. The longest window of whole
// groups that looks like a card and passes Luhn wins, so "4111 1111 1111 1111 42" gives
// up the trailing 42 instead of losing the card.
func (r *redactor) card(start, end int) int {
	groups := digitGroups(r.s[start:end], start)
	for i := 0; i < len(groups); {
		found := false
		// Windows of more than 19 digits are never cards: start from the longest that
		// is not, which keeps a long run of groups linear.
		last, digits := i, 0
		for last < len(groups) && digits+groups[last].end-groups[last].start <= 19 {
			digits += groups[last].end - groups[last].start
			last++
		}
		for j := last - 1; j >= i; j-- {
			if r.isCard(groups[i : j+1]) {
				r.claim(groups[i].start, groups[j].end, Card)
				i, found = j+1, true
				break
			}
		}
		if !found {
			i++
		}
	}
	return end
}

type group struct{ start, end int }

// digitGroups splits a run like "4111 1111-1111" into its digit groups, with offsets
// into the whole text.
func digitGroups(run string, offset int) []group {
	var gs []group
	begin := -1
	for i := 0; i <= len(run); i++ {
		if i < len(run) && isDigit(run[i]) {
			if begin < 0 {
				begin = i
			}
			continue
		}
		if begin >= 0 {
			gs = append(gs, group{offset + begin, offset + i})
			begin = -1
		}
	}
	return gs
}

// isCard reports whether the groups are printed like a card number and pass Luhn. A
// dotted number ("4111.1111.1111.1111") must use dots throughout and end in a group of
// three to six digits, as "1234.5678901234567" is more likely a decimal.
func (r *redactor) isCard(gs []group) bool {
	digits, dotted := 0, false
	for k, g := range gs {
		n := g.end - g.start
		digits += n
		if k > 0 && r.s[g.start-1] == '.' {
			dotted = true
		}
		switch {
		case digits > 19:
			return false
		case len(gs) == 1:
		case k == 0 && n != 4: // every scheme prints a first group of four
			return false
		case k > 0 && k < len(gs)-1 && (n < 3 || n > 6):
			return false
		}
	}
	if dotted {
		for _, g := range gs[1:] {
			if r.s[g.start-1] != '.' {
				return false
			}
		}
		if n := gs[len(gs)-1].end - gs[len(gs)-1].start; n < 3 || n > 6 {
			return false
		}
	}
	start, end := gs[0].start, gs[len(gs)-1].end
	if digits < 13 || !numberBoundaryBefore(r.s, start) || !numberBoundaryAfter(r.s, end) {
		return false
	}
	if start > 0 && r.s[start-1] == '+' { // "+49 170 ..." is a phone number
		return false
	}
	return luhnSkipping(r.s[start:end])
}

func (r *redactor) ssn(start, end int) int {
	c := r.s[start:end]
	if c[3] != c[6] || !numberBoundaryBefore(r.s, start) || !numberBoundaryAfter(r.s, end) {
		return end
	}
	area, grp, serial := c[0:3], c[4:6], c[7:11]
	if area == "000" || area == "666" || area[0] == '9' || grp == "00" || serial == "0000" {
		return end // never issued: more likely some other number
	}
	return r.claim(start, end, NationalID)
}

// nino checks the prefix rules of a UK National Insurance number: neither letter is D,
// F, I or U, V, and the second is not O. Q is allowed although HMRC never issues it:
// HMRC's own specimen "QQ 12 34 56 C" uses it, and redacting a specimen costs nothing.
func (r *redactor) nino(start, end int) int {
	if !boundaryBefore(r.s, start) || !boundaryAfter(r.s, end) {
		return end
	}
	a, b := r.s[start]|0x20, r.s[start+1]|0x20
	if strings.IndexByte("dfiuv", a) >= 0 || strings.IndexByte("dfiouv", b) >= 0 {
		return end
	}
	return r.claim(start, end, NationalID)
}

// phone validates a phone-shaped candidate. When only its left edge is wrong (glued to
// a word, as in "ID-12 020 7946 0958") the search resumes at its second group, where a
// phone number may start.
func (r *redactor) phone(start, end int) int {
	c := r.s[start:end]
	groups := digitGroups(c, 0)
	digits, ones := 0, 0
	for _, g := range groups {
		digits += g.end - g.start
		if g.end-g.start == 1 {
			ones++
		}
	}
	if digits < 7 || digits > 15 {
		return end
	}
	if !boundaryBefore(r.s, start) && len(groups) > 1 {
		return start + groups[1].start
	}
	if !numberBoundaryBefore(r.s, start) || !numberBoundaryAfter(r.s, end) {
		return end
	}
	plus, parens := c[0] == '+', strings.IndexByte(c, '(') >= 0
	if len(groups) == 1 {
		trunk := c[0] == '0' && c[1] != '0' && (digits == 10 || digits == 11)
		if (plus && digits >= 8) || trunk {
			return r.claim(start, end, Phone)
		}
		return end
	}
	if ones > 1 || (!plus && !parens && (looksLikeQuantity(c, groups) || looksLikeList(c, groups))) {
		return end
	}
	return r.claim(start, end, Phone)
}

// looksLikeList recognises lists of numbers that a phone pattern would otherwise take:
// every group a round number ("100 200 300 400 500", "1000 2000"), or at least three
// groups that step by the same amount ("10 12 14 16", "2019 2020 2021"). Digits of a
// phone number almost never do either. A first group with a trunk prefix ("020 ...")
// is phone structure and is never a list.
func looksLikeList(c string, groups []group) bool {
	if groups[0].end-groups[0].start > 1 && c[groups[0].start] == '0' {
		return false
	}
	round := true
	for _, g := range groups {
		if c[g.end-1] != '0' {
			round = false
			break
		}
	}
	if round {
		return true
	}
	if len(groups) < 3 {
		return false
	}
	value := func(g group) int {
		v := 0
		for i := g.start; i < g.end; i++ {
			v = v*10 + int(c[i]-'0')
		}
		return v
	}
	step := value(groups[1]) - value(groups[0])
	if step == 0 {
		return false
	}
	for k := 2; k < len(groups); k++ {
		if value(groups[k])-value(groups[k-1]) != step {
			return false
		}
	}
	return true
}

// looksLikeQuantity recognises thousands grouping ("2 500 000", "1.299.999") that a
// phone pattern would otherwise take: one kind of separator, a short first group, and
// groups of exactly three after it. A three-digit first group with spaces is left to be
// a phone number, as Spanish mobiles are written "612 345 678".
func looksLikeQuantity(c string, groups []group) bool {
	sep := c[groups[0].end]
	if sep != ' ' && sep != '.' {
		return false
	}
	first := groups[0].end - groups[0].start
	if first > 3 || (sep == ' ' && first > 2) {
		return false
	}
	for k := 1; k < len(groups); k++ {
		if groups[k].end-groups[k].start != 3 || c[groups[k].start-1] != sep {
			return false
		}
	}
	return true
}

// ibanLength is each IBAN country's length, from the SWIFT IBAN registry.
var ibanLength = map[string]int{
	"AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
	"BH": 22, "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24,
	"DE": 22, "DJ": 27, "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18,
	"FK": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
	"GT": 28, "HN": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IQ": 23, "IS": 26,
	"IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32, "LI": 21, "LT": 20,
	"LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MN": 20,
	"MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
	"PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
	"SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25,
	"SV": 28, "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20,
	"YE": 30,
}

// Luhn reports whether digits, a non-empty string of ASCII digits and nothing else,
// passes the Luhn (mod 10) check used by payment card numbers. Separators must be
// removed first.
func Luhn(digits string) bool {
	if digits == "" {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if !isDigit(digits[i]) {
			return false
		}
	}
	return luhnSkipping(digits)
}

// luhnSkipping runs the Luhn check over the digits of s, skipping anything else.
func luhnSkipping(s string) bool {
	sum, double := 0, false
	for i := len(s) - 1; i >= 0; i-- {
		if !isDigit(s[i]) {
			continue
		}
		d := int(s[i] - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

func isDigit(c byte) bool  { return c >= '0' && c <= '9' }
func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isAlnum(c byte) bool  { return isDigit(c) || isLetter(c) }

// isJoiner reports characters that glue two tokens into one identifier when they have
// a letter or digit on both sides: "ORD-2026", "v1.2", "a_1", "10/8".
func isJoiner(c byte) bool { return strings.IndexByte("-_./\\", c) >= 0 }

// boundaryBefore reports whether a token may start at i: the text before it does not
// continue it. A JSON escape such as "\n" counts as a boundary although its last byte
// is a letter, because request bodies are recorded as JSON. A label continues a token
// as the letter or digit it replaced did, so that redacting text that was redacted
// before finds nothing new.
func boundaryBefore(s string, i int) bool {
	if i == 0 {
		return true
	}
	p := s[i-1]
	switch {
	case i >= 2 && s[i-2] == '\\' && (p == 'n' || p == 't' || p == 'r'):
		return true
	case alnumBefore(s, i, isAlnum):
		return false
	case isJoiner(p) && alnumBefore(s, i-1, isAlnum):
		return false
	case p == ':' && alnumBefore(s, i-1, isDigit): // a time or a port: 12:34567
		return false
	}
	return true
}

// boundaryAfter reports whether a token may end at i.
func boundaryAfter(s string, i int) bool {
	if i >= len(s) {
		return true
	}
	n := s[i]
	switch {
	case alnumAt(s, i, isAlnum):
		return false
	case isJoiner(n) && alnumAt(s, i+1, isAlnum):
		return false
	case (n == ':' || n == ',') && alnumAt(s, i+1, isDigit): // 1234567:89, 1 299,99
		return false
	}
	return true
}

// alnumBefore reports whether s[:i] ends with a byte that is, or with a label (which
// stands for the letters or digits it replaced).
func alnumBefore(s string, i int, is func(byte) bool) bool {
	return i > 0 && (is(s[i-1]) || s[i-1] == ']' && labelBefore(s, i))
}

// alnumAt reports whether s[i:] starts with a byte that is, or with a label.
func alnumAt(s string, i int, is func(byte) bool) bool {
	return i < len(s) && (is(s[i]) || s[i] == '[' && labelAfter(s, i))
}

var labels = [...]string{Email, Phone, Card, NationalID, IBAN}

// labelBefore reports whether s[:i] ends with a label.
func labelBefore(s string, i int) bool {
	for _, l := range labels {
		if strings.HasSuffix(s[:i], l) {
			return true
		}
	}
	return false
}

// labelAfter reports whether s[i:] starts with a label.
func labelAfter(s string, i int) bool {
	for _, l := range labels {
		if strings.HasPrefix(s[i:], l) {
			return true
		}
	}
	return false
}

// numberBoundaryBefore is boundaryBefore for digit runs, which must also not be an
// amount ("$ 1 299 000"), a numbered reference ("#12345678") or a signed value.
func numberBoundaryBefore(s string, i int) bool {
	if !boundaryBefore(s, i) {
		return false
	}
	prev, _ := utf8.DecodeLastRuneInString(strings.TrimRight(s[:i], " "))
	return prev != '#' && !unicode.Is(unicode.Sc, prev)
}

// numberBoundaryAfter is boundaryAfter for digit runs, which must also not be a
// percentage or an amount ("2 500 000 €").
func numberBoundaryAfter(s string, i int) bool {
	if !boundaryAfter(s, i) {
		return false
	}
	next, _ := utf8.DecodeRuneInString(strings.TrimLeft(s[i:], " "))
	return next != '%' && !unicode.Is(unicode.Sc, next)
}
