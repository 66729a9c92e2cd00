package pii

// Digit sequences: numbers that speech-to-text writes one digit at a time, either as
// digits ("4 1 1 1 1 1 ...") or as words ("four one one one ...", "oh seven nine",
// "double five"). Such a sequence has no grouping to go by, so it is read as one number
// and classified by its digits alone (classifySequence).

// A unit is one token of a digit sequence: a digit, a digit word, or "double"/"triple"
// and the digit word after it.
type unit struct {
	start, end int  // the token's text
	digit      byte // '0'..'9'
	count      int  // how many times digit is said: 1, 2 or 3
}

// maxSequenceUnits is the longest sequence looked at. Nobody reads out a 64-digit
// number; a longer run is data (a table, a list of scores) and is left alone.
const maxSequenceUnits = 64

// maxNumber is the most digits a number classified here has (a 19-digit card); minNumber
// the fewest (a "plus" and eight digits).
const (
	maxNumber = 19
	minNumber = 8
)

// classifySequence returns the label for a number read digit by digit, or "" for none:
//
//   - a card number: 13 to 19 digits passing Luhn;
//   - a US SSN: 9 digits of an issued area, group and serial;
//   - a phone number: 8 to 15 digits after a "+" (or "plus"); 10 or 11 digits with a
//     trunk prefix 0 ("07946 123456"); 10 to 17 digits after an international prefix
//     00; a North American number of 10 digits, or 11 after a 1 (area code and
//     exchange start with 2..9 and are not N11 service codes).
//
// Digits that count up or down ("1 2 3 4 5 6 7 8 9", "nine eight seven ...") are a
// list, never a number. Fewer than minNumber digits are never anything.
func classifySequence(d []byte, plus bool) string {
	n := len(d)
	if n < minNumber || n > maxNumber || counting(d) {
		return ""
	}
	if plus {
		if n <= 15 {
			return Phone
		}
		return ""
	}
	if n >= 13 && luhnSkipping(string(d)) {
		return Card
	}
	if n == 9 && issuedSSN(d) {
		return NationalID
	}
	switch {
	case d[0] == '0' && d[1] != '0' && (n == 10 || n == 11):
		return Phone
	case d[0] == '0' && d[1] == '0' && n >= 10 && n <= 17:
		return Phone
	case n == 10 && nanp(d):
		return Phone
	case n == 11 && d[0] == '1' && nanp(d[1:]):
		return Phone
	}
	return ""
}

// counting reports digits that each differ from the one before by +1, or each by -1,
// modulo 10 ("7 8 9 0 1 2 3 4").
func counting(d []byte) bool {
	up, down := true, true
	for i := 1; i < len(d); i++ {
		diff := (int(d[i]) - int(d[i-1]) + 10) % 10
		up = up && diff == 1
		down = down && diff == 9
	}
	return up || down
}

// issuedSSN reports whether nine digits are an SSN the SSA could have issued.
func issuedSSN(d []byte) bool {
	area, grp, serial := string(d[0:3]), string(d[3:5]), string(d[5:9])
	return area != "000" && area != "666" && area[0] != '9' && grp != "00" && serial != "0000"
}

// nanp reports a North American number NPA-NXX-XXXX whose area code and exchange both
// start with 2..9 and are not N11 service codes (411, 911).
func nanp(d []byte) bool {
	nxx := func(x []byte) bool { return x[0] >= '2' && !(x[1] == '1' && x[2] == '1') }
	return nxx(d[0:3]) && nxx(d[3:6])
}

// sequence claims the number in a digit sequence. plusStart is where a "+" or "plus"
// before the first unit starts, or -1. The whole sequence is classified first. Failing
// that, a spoken "one" or "oh" at either end is dropped, as such words sit next to
// numbers in ordinary speech ("..., one more thing", "oh, and ..."). Failing that, a
// card number at the start of a longer sequence is claimed when at least three more
// digits follow it (an expiry date or security code read out after it), and the rest is
// looked at on its own. Any other part of a sequence is a number only by chance: one
// 16-digit run has a 13-digit part that passes Luhn more often than not.
func (r *redactor) sequence(units []unit, plusStart int) {
	n := len(units)
	if n == 0 || n > maxSequenceUnits {
		return
	}
	var flat [3 * maxSequenceUnits]byte
	var pre [maxSequenceUnits + 1]int // pre[k] is the digits before unit k
	for k, u := range units {
		for c := 0; c < u.count; c++ {
			flat[pre[k]+c] = u.digit
		}
		pre[k+1] = pre[k] + u.count
	}
	try := func(i, j int) bool {
		plus := i == 0 && plusStart >= 0
		label := classifySequence(flat[pre[i]:pre[j]], plus)
		if label == "" {
			return false
		}
		start := units[i].start
		if plus {
			start = plusStart
		}
		r.claim(start, units[j-1].end, label)
		return true
	}
	if try(0, n) {
		return
	}
	strayFirst := n > 1 && plusStart < 0 && r.stray(units[0])
	strayLast := n > 1 && r.stray(units[n-1])
	if strayLast && try(0, n-1) || strayFirst && try(1, n) || strayFirst && strayLast && n > 2 && try(1, n-1) {
		return
	}
	if plusStart >= 0 {
		return
	}
	for j := n - 1; j >= 1; j-- {
		card, rest := pre[j], pre[n]-pre[j]
		if card <= maxNumber && rest >= 3 && classifySequence(flat[:card], false) == Card {
			r.claim(units[0].start, units[j-1].end, Card)
			r.sequence(units[j:], -1)
			return
		}
	}
}

// stray reports a unit that is the word "one" or "oh".
func (r *redactor) stray(u unit) bool {
	if u.count != 1 || !isLetter(r.s[u.start]) {
		return false
	}
	w := r.s[u.start:u.end]
	return u.digit == '1' || len(w) == 2
}

// spaced reads a run of single digits separated by single spaces, as speech-to-text
// writes a number read out digit by digit: "0 7 9 4 6 1 2 3 4 5 6".
func (r *redactor) spaced(start, end int) int {
	if !numberBoundaryBefore(r.s, start) || !numberBoundaryAfter(r.s, end) {
		return end
	}
	plusStart := -1
	if r.s[start] == '+' {
		plusStart = start
		start++
	}
	if (end-start+1)/2 > maxSequenceUnits {
		return end
	}
	var buf [maxSequenceUnits]unit
	units := buf[:0]
	for i := start; i < end; i += 2 {
		units = append(units, unit{i, i + 1, r.s[i], 1})
	}
	r.sequence(units, plusStart)
	return end
}

// Spoken digits. The words are looked for by probing the text every spokenStride bytes
// rather than reading every word: a sequence that could be a number has at least
// minNumber digits, and even the shortest words ("oh oh oh ...") need three bytes a
// digit: nine digits take 26 bytes, and eight after "plus " 28, more than spokenStride,
// so some probe lands inside it. From there
// the whole chain of digit words around the probe is read. The probes cost little more
// than a scan for digits, so text without spoken numbers stays fast.
const spokenStride = 24

// Kinds of word in a spoken sequence.
const (
	notSpoken = iota
	spokenDigit
	spokenDouble
	spokenTriple
	spokenPlus
)

// maxSpokenWord is the longest word of a spoken sequence ("double", "triple", "three").
const maxSpokenWord = 6

// spokenWord classifies an ASCII word, case-insensitively.
func spokenWord(w string) (kind int, digit byte) {
	if len(w) < 2 || len(w) > maxSpokenWord {
		return notSpoken, 0
	}
	var key uint64
	for i := 0; i < len(w); i++ {
		key = key<<8 | uint64(w[i]|0x20)
	}
	switch key {
	case 'z'<<24 | 'e'<<16 | 'r'<<8 | 'o', 'o'<<8 | 'h':
		return spokenDigit, '0'
	case 'o'<<16 | 'n'<<8 | 'e':
		return spokenDigit, '1'
	case 't'<<16 | 'w'<<8 | 'o':
		return spokenDigit, '2'
	case 't'<<32 | 'h'<<24 | 'r'<<16 | 'e'<<8 | 'e':
		return spokenDigit, '3'
	case 'f'<<24 | 'o'<<16 | 'u'<<8 | 'r':
		return spokenDigit, '4'
	case 'f'<<24 | 'i'<<16 | 'v'<<8 | 'e':
		return spokenDigit, '5'
	case 's'<<16 | 'i'<<8 | 'x':
		return spokenDigit, '6'
	case 's'<<32 | 'e'<<24 | 'v'<<16 | 'e'<<8 | 'n':
		return spokenDigit, '7'
	case 'e'<<32 | 'i'<<24 | 'g'<<16 | 'h'<<8 | 't':
		return spokenDigit, '8'
	case 'n'<<24 | 'i'<<16 | 'n'<<8 | 'e':
		return spokenDigit, '9'
	case 'd'<<40 | 'o'<<32 | 'u'<<24 | 'b'<<16 | 'l'<<8 | 'e':
		return spokenDouble, 0
	case 't'<<40 | 'r'<<32 | 'i'<<24 | 'p'<<16 | 'l'<<8 | 'e':
		return spokenTriple, 0
	case 'p'<<24 | 'l'<<16 | 'u'<<8 | 's':
		return spokenPlus, 0
	}
	return notSpoken, 0
}

// isSpokenSep reports the characters between the words of a spoken sequence; at most
// maxSpokenSep of them ("four, one", "four - one").
func isSpokenSep(c byte) bool { return c == ' ' || c == ',' || c == '-' }

const maxSpokenSep = 3

// wordAt returns the ASCII word s[ws:we] that contains position q (a letter), within
// [lo, hi), if it is a whole word of at most maxSpokenWord letters: not glued to a
// letter, digit or '_' on either side.
// Words with a letter that no spoken word has ("a", "c", "m", ...) are rejected as soon
// as it is seen.
func wordAt(s string, q, lo, hi int) (ws, we int, ok bool) {
	if letterClass[s[q]] != spokenLetter {
		return 0, 0, false
	}
	ws, we = q, q+1
	for ; we < hi && we-ws <= maxSpokenWord; we++ {
		if c := letterClass[s[we]]; c != spokenLetter {
			if c == otherLetter {
				return 0, 0, false
			}
			break
		}
	}
	for ; ws > lo && we-ws <= maxSpokenWord; ws-- {
		if c := letterClass[s[ws-1]]; c != spokenLetter {
			if c == otherLetter {
				return 0, 0, false
			}
			break
		}
	}
	if we-ws > maxSpokenWord {
		return 0, 0, false
	}
	if ws > 0 && (isAlnum(s[ws-1]) || s[ws-1] == '_' || s[ws-1] == ']' && labelBefore(s, ws)) {
		return 0, 0, false
	}
	if we < len(s) && (isAlnum(s[we]) || s[we] == '_' || s[we] == '[' && labelAfter(s, we)) {
		return 0, 0, false
	}
	return ws, we, true
}

// letterClass sorts bytes into the letters of spoken words, other letters, and the rest.
var letterClass = func() (t [256]uint8) {
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = otherLetter, otherLetter
	}
	for _, c := range "zerohntwfuivsxgdblp" { // the letters of zero, oh, one, ... plus
		t[c], t[c-'a'+'A'] = spokenLetter, spokenLetter
	}
	return t
}()

const (
	notLetter = iota
	otherLetter
	spokenLetter
)

// spokenWordAt returns the word of a spoken sequence found by a probe at p: the word
// at p, or the one right after the separators at p.
func spokenWordAt(s string, p, lo, hi int) (ws, we int, ok bool) {
	q := p
	for q < hi && q-p < maxSpokenSep && isSpokenSep(s[q]) {
		q++
	}
	if q >= hi || !isLetter(s[q]) {
		return 0, 0, false
	}
	ws, we, ok = wordAt(s, q, lo, hi)
	if !ok {
		return 0, 0, false
	}
	if kind, _ := spokenWord(s[ws:we]); kind == notSpoken {
		return 0, 0, false
	}
	return ws, we, true
}

// firstSpokenProbe returns the first probe position that lands on a word of a spoken
// sequence, or -1: the cheap test whether the spoken pass has anything to do.
func firstSpokenProbe(s string, stride int) int {
	for p := 0; p < len(s); p += stride {
		if c := s[p]; letterClass[c] == otherLetter || letterClass[c] == notLetter && !isSpokenSep(c) {
			continue
		}
		if _, _, ok := spokenWordAt(s, p, 0, len(s)); ok {
			return p
		}
	}
	return -1
}

// spoken claims the numbers spoken as words in the unclaimed text. Probes before from
// (a multiple of stride) are known to find nothing.
func (r *redactor) spoken(from, stride int) {
	r.eachGap([]window{{0, len(r.s)}}, func(lo, hi int) {
		p := max(from, (lo+stride-1)/stride*stride)
		for p < hi {
			next := p + stride
			if ws, we, ok := spokenWordAt(r.s, p, lo, hi); ok {
				end := r.spokenChain(ws, we, lo, hi)
				next = max(next, (end+stride-1)/stride*stride)
			}
			p = next
		}
	})
}

// spokenNeighbour returns the spoken word right before (dir < 0) or after (dir > 0)
// the word s[ws:we], across one to maxSpokenSep separators.
func spokenNeighbour(s string, ws, we, lo, hi, dir int) (int, int, bool) {
	var q int
	if dir < 0 {
		q = ws - 1
		for n := 0; q >= lo && isSpokenSep(s[q]); n++ {
			if n == maxSpokenSep {
				return 0, 0, false
			}
			q--
		}
		if q < lo || q == ws-1 || !isLetter(s[q]) {
			return 0, 0, false
		}
	} else {
		q = we
		for n := 0; q < hi && isSpokenSep(s[q]); n++ {
			if n == maxSpokenSep {
				return 0, 0, false
			}
			q++
		}
		if q >= hi || q == we || !isLetter(s[q]) {
			return 0, 0, false
		}
	}
	nws, nwe, ok := wordAt(s, q, lo, hi)
	if !ok {
		return 0, 0, false
	}
	if kind, _ := spokenWord(s[nws:nwe]); kind == notSpoken {
		return 0, 0, false
	}
	return nws, nwe, true
}

// spokenChain reads the chain of spoken words around the word s[ws:we], splits it into
// sequences (a "plus" starts one, a "double" not followed by a digit ends one), claims
// the numbers in them, and returns where the chain ends.
func (r *redactor) spokenChain(ws, we, lo, hi int) int {
	for {
		pws, pwe, ok := spokenNeighbour(r.s, ws, we, lo, hi, -1)
		if !ok {
			break
		}
		ws, we = pws, pwe
	}
	var buf [maxSequenceUnits]unit
	units, plusStart, long := buf[:0], -1, false
	flush := func() {
		if !long {
			r.sequence(units, plusStart)
		}
		units, plusStart, long = buf[:0], -1, false
	}
	add := func(u unit) {
		if len(units) == maxSequenceUnits {
			long = true
			return
		}
		units = append(units, u)
	}
	// The chain is read word by word; pending is a "double" or "triple" waiting for
	// its digit.
	pendingStart, pendingCount := -1, 0
	end := we
	for ok := true; ok; ws, we, ok = spokenNeighbour(r.s, ws, we, lo, hi, 1) {
		end = we
		kind, digit := spokenWord(r.s[ws:we])
		switch kind {
		case spokenDigit:
			if pendingStart >= 0 {
				add(unit{pendingStart, we, digit, pendingCount})
				pendingStart = -1
			} else {
				add(unit{ws, we, digit, 1})
			}
		case spokenDouble, spokenTriple:
			if pendingStart >= 0 { // "double triple": neither has its digit
				flush()
			}
			pendingStart, pendingCount = ws, kind-spokenDouble+2
		case spokenPlus:
			flush()
			pendingStart = -1
			plusStart = ws
		}
	}
	flush()
	return end
}
