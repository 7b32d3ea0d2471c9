package localbroker

import (
	"crypto/tls"
	"strings"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"golang.org/x/crypto/bcrypt"

	"github.com/ralph-gateway/ralph/internal/topic"
)

// User is an account devices log in with. Its password is kept only as a
// bcrypt hash.
type User struct {
	Name         string
	PasswordHash []byte
	ACL          ACL
}

// ACL lists the topic filters a client may publish and subscribe to; %u
// stands for its username and %c for its client id. Empty lists allow
// nothing; ["#"] allows everything (but $ topics).
//
// The deny lists are evaluated first and win over the allow lists: a
// publish to a topic a PublishDeny filter matches is refused; a
// subscription to a filter a SubscribeDeny filter covers (every topic it
// could match is denied) is refused, and a message on a topic a
// SubscribeDeny filter matches is delivered to no subscription of the
// client, whatever its filter (so "#" may be subscribed to, and brings
// everything but the denied topics).
type ACL struct {
	Publish, Subscribe         []string
	PublishDeny, SubscribeDeny []string
}

// mayPublish reports whether the ACL lets cl publish to topic name t.
func (a ACL) mayPublish(t string, cl *mqtt.Client) bool {
	for _, f := range a.PublishDeny {
		if topic.Match(expand(f, cl), t) {
			return false
		}
	}
	return allows(a.Publish, t, cl)
}

// maySubscribe reports whether the ACL lets cl subscribe to filter t, or
// receive a message on topic name t.
func (a ACL) maySubscribe(t string, cl *mqtt.Client) bool {
	for _, f := range a.SubscribeDeny {
		if topic.Covers(expand(f, cl), t) {
			return false
		}
	}
	return allows(a.Subscribe, t, cl)
}

func expand(f string, cl *mqtt.Client) string {
	return topic.Expand(f, string(cl.Properties.Username), cl.ID)
}

// access is who may connect and what they may do.
type access struct {
	users     map[string]User
	anonymous ACL
	allowAnon bool
}

// SetUsers replaces the users, the anonymous ACL and whether non-loopback
// listeners admit anonymous clients. Connected clients stay connected, and
// the new ACLs apply to what they do next, except clients of users that
// no longer exist, which are disconnected.
func (b *Broker) SetUsers(users []User, anonymous ACL, allowAnonymous bool) {
	a := &access{users: make(map[string]User, len(users)), anonymous: anonymous, allowAnon: allowAnonymous}
	for _, u := range users {
		a.users[u.Name] = u
	}
	b.access.Store(a)
	for _, cl := range b.srv.Clients.GetAll() {
		name := string(cl.Properties.Username)
		if _, ok := a.users[name]; name != "" && !ok && !cl.Net.Inline {
			b.log.Info("disconnecting a client whose user was removed", "user", name, "client", cl.ID)
			b.srv.DisconnectClient(cl, packets.ErrNotAuthorized)
		}
	}
}

// allows reports whether filters permit topic (a name, or a subscription
// filter, which must stay within one of them).
func allows(filters []string, t string, cl *mqtt.Client) bool {
	for _, f := range filters {
		if topic.Covers(expand(f, cl), t) {
			return true
		}
	}
	return false
}

// authHook checks passwords and ACLs. mochi's own auth ledger compares
// plaintext passwords; this one only knows bcrypt hashes.
type authHook struct {
	mqtt.HookBase
	b *Broker
}

func (h *authHook) ID() string { return "ralph-auth" }

func (h *authHook) Provides(b byte) bool {
	return b == mqtt.OnConnectAuthenticate || b == mqtt.OnACLCheck
}

func (h *authHook) OnConnectAuthenticate(cl *mqtt.Client, pk packets.Packet) bool {
	b := h.b
	name := string(pk.Connect.Username)
	if cl.Net.Listener == internalListener {
		if _, ok := b.access.Load().users[name]; ok || name == "" {
			return true
		}
		b.log.Error("refused an in-process client with an unknown user", "user", name, "client", cl.ID)
		return false
	}
	if b.certUser[cl.Net.Listener] {
		return b.certAuthenticate(cl)
	}
	if name == "" {
		if b.anonymousOK(cl.Net.Listener) {
			return true
		}
		b.authFailed.Add(1)
		b.log.Warn("refused an anonymous client: this listener requires a username", "client", cl.ID, "remote", cl.Net.Remote, "listener", cl.Net.Listener)
		return false
	}
	u, ok := b.access.Load().users[name]
	if !ok || bcrypt.CompareHashAndPassword(u.PasswordHash, pk.Connect.Password) != nil {
		b.authFailed.Add(1)
		b.log.Warn("authentication failed", "user", name, "client", cl.ID, "remote", cl.Net.Remote)
		return false
	}
	return true
}

// certAuthenticate admits a client whose verified certificate's common
// name is a user's name, as that user, whatever username and password it
// sent.
func (b *Broker) certAuthenticate(cl *mqtt.Client) bool {
	c := cl.Net.Conn
	if cc, ok := c.(*corkConn); ok {
		c = cc.Conn
	}
	tc, ok := c.(*tls.Conn)
	if !ok || len(tc.ConnectionState().PeerCertificates) == 0 {
		b.authFailed.Add(1)
		b.log.Warn("refused a client without a certificate on a cert_username listener", "client", cl.ID, "remote", cl.Net.Remote)
		return false
	}
	name := tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	if _, ok := b.access.Load().users[name]; !ok {
		b.authFailed.Add(1)
		b.log.Warn("refused a certificate whose common name is not a user", "common_name", name, "client", cl.ID, "remote", cl.Net.Remote)
		return false
	}
	cl.Properties.Username = []byte(name)
	return true
}

// OnACLCheck rules on subscriptions (and on each delivery). Publishes are
// ruled on in the ingest hook instead: mochi would disconnect an MQTT
// 3.1.1 client for a denied QoS>0 publish, where it should be dropped.
func (h *authHook) OnACLCheck(cl *mqtt.Client, t string, write bool) bool {
	if write {
		return true
	}
	// A shared subscription is ruled on by its filter, without the
	// $share/<group>/ in front.
	if rest, ok := strings.CutPrefix(t, "$share/"); ok {
		if _, filter, ok := strings.Cut(rest, "/"); ok {
			t = filter
		}
	}
	return h.b.mayRead(cl, t)
}

// mayRead is the ACL's rule on cl subscribing to, or receiving, t.
func (b *Broker) mayRead(cl *mqtt.Client, t string) bool {
	return b.topicWithinLimits(cl, t) && b.aclFor(cl).maySubscribe(t, cl)
}

func (b *Broker) aclFor(cl *mqtt.Client) ACL {
	a := b.access.Load()
	name := string(cl.Properties.Username)
	if name == "" {
		return a.anonymous
	}
	return a.users[name].ACL // nothing for a user just removed
}

// anonymousOK says whether listener id accepts clients without a username:
// loopback listeners always do, others only with AllowAnonymous.
func (b *Broker) anonymousOK(id string) bool {
	return b.access.Load().allowAnon || b.loopback[id]
}
