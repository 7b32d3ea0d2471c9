package bridge

// Credentials that expire, and the kind Azure IoT Hub devices use: a
// shared access signature (SAS) token signed with the device's key.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/url"
	"strconv"
	"time"
)

// Credentials returns the username and password to connect to host with
// at now, and when the upstream stops accepting them.
type Credentials func(host string, now time.Time) (username string, password []byte, expires time.Time)

// AzureAPIVersion is the IoT Hub API version the username names.
const AzureAPIVersion = "2021-04-12"

// AzureIoTHub returns the credentials of IoT Hub device deviceID, whose
// symmetric key (decoded from base64) is key: the username
// "<host>/<device>/?api-version=…" and a SAS token valid for ttl.
func AzureIoTHub(deviceID string, key []byte, ttl time.Duration) Credentials {
	return func(host string, now time.Time) (string, []byte, time.Time) {
		expires := now.Add(ttl).Truncate(time.Second)
		token := azureSAS(host+"/devices/"+deviceID, key, expires)
		return host + "/" + deviceID + "/?api-version=" + AzureAPIVersion, []byte(token), expires
	}
}

// azureSAS is the SAS token for resource (host/devices/<id>) until
// expires: HMAC-SHA256 with key of the URL-encoded resource, a newline and
// the expiry in Unix seconds.
func azureSAS(resource string, key []byte, expires time.Time) string {
	sr := url.QueryEscape(resource)
	se := strconv.FormatInt(expires.Unix(), 10)
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(sr + "\n" + se))
	sig := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return "SharedAccessSignature sr=" + sr + "&sig=" + url.QueryEscape(sig) + "&se=" + se
}
