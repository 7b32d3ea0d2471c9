package serialin

// The board's online/offline state: kept in the port's Status and
// published, retained, on the status topic, also for a device that is not
// there.

import (
	"encoding/json"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

func (s *session) goOnline() {
	if s.online {
		return
	}
	s.online = true
	s.p.log.Info("board online", "board", s.board, "device", s.dev)
	s.p.setStatus(func(st *Status) {
		st.Online, st.Board, st.Firmware, st.Since = true, s.board, s.firmware, time.Now()
	})
	s.publishStatus("online")
}

func (s *session) goOffline(why string) {
	if !s.online {
		return
	}
	s.online = false
	s.p.log.Info("board offline", "board", s.board, "why", why)
	s.p.setStatus(func(st *Status) { st.Online, st.Since = false, time.Now() })
	s.publishStatus("offline")
}

func (s *session) statusJSON(state string) []byte {
	b, _ := json.Marshal(struct {
		State    string    `json:"state"`
		Board    string    `json:"board,omitempty"`
		Firmware string    `json:"firmware,omitempty"`
		Device   string    `json:"device,omitempty"`
		Since    time.Time `json:"since"`
	}{state, s.board, s.firmware, s.dev, time.Now().UTC().Truncate(time.Second)})
	return b
}

func (s *session) publishStatus(state string) {
	if s.mq == nil {
		return
	}
	s.mq.send(&packets.Publish{Topic: s.p.opts.StatusTopic, Payload: s.statusJSON(state), Retain: true, Properties: &packets.Properties{}})
}

// announceAbsent publishes the offline status for a device that is not
// there, through a short-lived connection.
func (p *Port) announceAbsent() {
	s := &session{p: p}
	conn := p.opts.Dial()
	c := p.connectPacket(p.ClientID() + "-status")
	c.CleanStart = true
	if _, err := connect(conn, c); err != nil {
		conn.Close()
		p.log.Warn("cannot announce the port offline", "err", err)
		return
	}
	s.mq = newMQTTConn(conn)
	s.publishStatus("offline")
	s.mq.send(&packets.Disconnect{ReasonCode: packets.DisconnectNormalDisconnection})
	s.mq.close()
}
