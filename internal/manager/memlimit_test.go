package manager

import "testing"

func TestGoMemoryLimit(t *testing.T) {
	const mi = 1 << 20
	for _, c := range []struct {
		flag, container, gomemlimit string
		want                        int64
		wantErr                     bool
	}{
		{flag: DefaultGoMemoryLimit, container: "268435456", want: 268435456 * 80 / 100},     // the chart's 256Mi
		{flag: DefaultGoMemoryLimit, container: "268435456", gomemlimit: "100MiB", want: -1}, // the environment's stays
		{flag: "85%", container: "268435456", want: 268435456 * 85 / 100},
		{flag: "50%", container: "268435456", gomemlimit: "100MiB", want: 128 * mi}, // an explicit flag wins
		{flag: DefaultGoMemoryLimit, container: "", want: -1},                       // no limit known
		{flag: "200Mi", container: "268435456", want: 200 * mi},
		{flag: "209715200", want: 200 * mi},
		{flag: "off", container: "268435456", want: -1},
		{flag: "0", container: "268435456", want: -1},
		{flag: "150%", container: "268435456", wantErr: true},
		{flag: "0%", container: "268435456", wantErr: true},
		{flag: "85%", container: "256Mi", wantErr: true}, // the downward API gives bytes
		{flag: "lots", wantErr: true},
		{flag: "-1Mi", wantErr: true},
	} {
		got, why, err := GoMemoryLimit(c.flag, c.container, c.gomemlimit)
		if (err != nil) != c.wantErr || (!c.wantErr && got != c.want) {
			t.Errorf("GoMemoryLimit(%q, %q, %q) = %d (%s), %v; want %d, error %v", c.flag, c.container, c.gomemlimit, got, why, err, c.want, c.wantErr)
		}
		if err == nil && why == "" {
			t.Errorf("GoMemoryLimit(%q, %q, %q): no reason for the log", c.flag, c.container, c.gomemlimit)
		}
	}
}
