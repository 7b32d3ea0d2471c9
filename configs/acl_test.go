package configs

// The ACLs' deny lists: their defaults, decoding, validation (file:line:
// key) and the serial port warning they can cause.

import (
	"reflect"
	"testing"
)

const someHash = "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"

func TestACLDenyLists(t *testing.T) {
	cfg, err := Parse("ralph.toml", []byte(doc(
		`[broker.anonymous]`,
		`subscribe_deny = ["test/nosubscribe"]`,
		`[[broker.users]]`, `name = "esp32"`, `password_hash = "`+someHash+`"`,
		`publish = ["sensors/%u/#"]`,
		`publish_deny = ["sensors/%u/config"]`,
		`subscribe_deny = ["cmd/%c/debug/#"]`,
		`[[broker.users]]`, `name = "plain"`, `password_hash = "`+someHash+`"`,
	)))
	if err != nil {
		t.Fatal(err)
	}
	wantAnon := ACL{Publish: []string{"#"}, Subscribe: []string{"#", "$SYS/#"}, PublishDeny: []string{}, SubscribeDeny: []string{"test/nosubscribe"}}
	if !reflect.DeepEqual(cfg.Broker.Anonymous, wantAnon) {
		t.Errorf("anonymous ACL %+v, want %+v", cfg.Broker.Anonymous, wantAnon)
	}
	esp, plain := cfg.Broker.Users[0], cfg.Broker.Users[1]
	if !reflect.DeepEqual(esp.PublishDeny, []string{"sensors/%u/config"}) || !reflect.DeepEqual(esp.SubscribeDeny, []string{"cmd/%c/debug/#"}) ||
		!reflect.DeepEqual(esp.Subscribe, []string{"#", "$SYS/#"}) {
		t.Errorf("user esp32: %+v", esp)
	}
	// Left out: nothing denied.
	if plain.PublishDeny == nil || len(plain.PublishDeny) != 0 || plain.SubscribeDeny == nil || len(plain.SubscribeDeny) != 0 {
		t.Errorf("user plain's deny lists %#v, %#v; want empty", plain.PublishDeny, plain.SubscribeDeny)
	}

	for _, tt := range []struct{ toml, want string }{
		{doc(`[broker.anonymous]`, `publish_deny = ["a/#/b"]`),
			`ralph.toml:2: broker.anonymous.publish_deny[0]: topic filter "a/#/b": # must be the last level`},
		{doc(`[broker.anonymous]`, `subscribe_deny = ["ok", "a+"]`),
			`ralph.toml:2: broker.anonymous.subscribe_deny[1]: topic filter "a+": a wildcard must occupy a whole level`},
		{doc(`[[broker.users]]`, `name = "u"`, `password_hash = "`+someHash+`"`, `subscribe_deny = "cmd/#"`),
			`ralph.toml:4: broker.users[0].subscribe_deny: expected an array of strings, got string "cmd/#"`},
		{doc(`[[broker.users]]`, `name = "u"`, `password_hash = "`+someHash+`"`, `publish_deny = ["x/%u/#/y"]`),
			`ralph.toml:4: broker.users[0].publish_deny[0]: topic filter "x/u/#/y": # must be the last level`},
	} {
		_, err := Parse("ralph.toml", []byte(tt.toml))
		if err == nil || err.Error() != tt.want {
			t.Errorf("%s:\ngot  %v\nwant %s", tt.toml, err, tt.want)
		}
	}
}

// TestWarningSerialDenied: a serial port whose ACL denies its whole topic
// prefix gets the warning of one that allows nothing there; denying a part
// of it does not.
func TestWarningSerialDenied(t *testing.T) {
	for _, tt := range []struct {
		deny string
		warn bool
	}{{`"serial/kitchen/#"`, true}, {`"serial/#"`, true}, {`"serial/kitchen/config"`, false}} {
		cfg, err := Parse("ralph.toml", []byte(doc(
			`[broker.anonymous]`, `publish_deny = [`+tt.deny+`]`,
			`[[serial]]`, `name = "kitchen"`, `path = "/dev/ttyUSB0"`,
		)))
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		if tt.warn {
			want = []string{`serial port kitchen: the anonymous ACL allows no publish under "serial/kitchen/": the board's publishes will be refused`}
		}
		if got := cfg.Warnings(); !reflect.DeepEqual(got, want) {
			t.Errorf("publish_deny %s: warnings %q, want %q", tt.deny, got, want)
		}
	}
}
