package manager

import "testing"

func TestGoGCPercent(t *testing.T) {
	for _, c := range []struct {
		flag, gogc string
		limit      bool
		want       int
		wantOK     bool
		wantErr    bool
	}{
		{flag: DefaultGoGCPercent, want: 50, wantOK: true},
		{flag: DefaultGoGCPercent, gogc: "100", wantOK: false}, // the environment's stays
		{flag: "75", gogc: "100", want: 75, wantOK: true},      // an explicit flag wins
		{flag: " 200 ", want: 200, wantOK: true},
		{flag: "off", limit: true, want: -1, wantOK: true},
		{flag: "off", limit: false, wantErr: true}, // the heap would grow without bound
		{flag: "0", wantErr: true},
		{flag: "-5", wantErr: true},
		{flag: "1001", wantErr: true},
		{flag: "50%", wantErr: true},
		{flag: "lots", wantErr: true},
	} {
		got, ok, why, err := GoGCPercent(c.flag, c.gogc, c.limit)
		if (err != nil) != c.wantErr || ok != c.wantOK || (ok && got != c.want) {
			t.Errorf("GoGCPercent(%q, %q, %v) = %d, %v (%s), %v; want %d, %v, error %v", c.flag, c.gogc, c.limit, got, ok, why, err, c.want, c.wantOK, c.wantErr)
		}
		if err == nil && why == "" {
			t.Errorf("GoGCPercent(%q, %q, %v): no reason for the log", c.flag, c.gogc, c.limit)
		}
	}
}
