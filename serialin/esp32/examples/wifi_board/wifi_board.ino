// wifi_board: the Wi-Fi counterpart of serial_board. An ESP32 connects to
// Ralph's MQTT broker with the PubSubClient library (by Nick O'Leary,
// "PubSubClient" in the Library Manager), publishes the chip's temperature
// to devices/<name>/temp every 10 s and switches LED_BUILTIN on "on" and
// "off" messages on devices/<name>/cmd/led.
//
// On the gateway:
//   - Ralph must listen where the board can reach it, e.g.
//     listen = ["0.0.0.0:1883"] in [broker] of ralph.toml.
//   - Create the board's user: run `ralph passwd`, type the password you
//     put in kMqttPassword below, and add the printed hash to ralph.toml:
//
//         [[broker.users]]
//         name = "kitchen"                  # kMqttUser
//         password_hash = "$2a$10$..."      # from ralph passwd
//         publish = ["devices/%u/#"]
//         subscribe = ["devices/%u/cmd/#"]
//
//     then restart Ralph.
//
// PubSubClient publishes with QoS 0 only: Ralph stores what it receives,
// but a reading sent while the connection is silently dead is lost. Use
// the serial link (RalphSerial) or a QoS 1 capable client if each reading
// matters.

#include <PubSubClient.h>
#include <WiFi.h>

#ifndef LED_BUILTIN
#define LED_BUILTIN 2  // most ESP32 DevKit boards
#endif

// Placeholders: change them.
const char* kWifiSsid = "your-ssid";
const char* kWifiPassword = "your-wifi-password";
const char* kRalphHost = "192.168.1.10";  // the gateway's address
const uint16_t kRalphPort = 1883;
const char* kMqttUser = "kitchen";        // created with ralph passwd, see above
const char* kMqttPassword = "change-me";
const char* kName = "kitchen";            // topics are devices/<kName>/...

const uint32_t kPublishEveryMs = 10000;
const uint32_t kMinBackoffMs = 1000;
const uint32_t kMaxBackoffMs = 60000;

WiFiClient net;
PubSubClient mqtt(net);

char topicTemp[64], topicLed[64], topicStatus[64];
uint32_t lastPublish = 0;
uint32_t lastAttempt = 0;
uint32_t backoffMs = 0;  // 0: try at once

void onMessage(char* topic, byte* payload, unsigned int len) {
  if (strcmp(topic, topicLed) != 0) return;
  bool on;
  if (len == 2 && memcmp(payload, "on", 2) == 0) {
    on = true;
  } else if (len == 3 && memcmp(payload, "off", 3) == 0) {
    on = false;
  } else {
    Serial.printf("%s: expected on or off, got %u bytes\n", topic, len);
    return;
  }
  digitalWrite(LED_BUILTIN, on ? HIGH : LOW);
  Serial.printf("LED %s\n", on ? "on" : "off");
}

// connect makes one attempt. The will tells subscribers the board is gone
// if it disappears without saying so.
bool connect() {
  char clientId[48];
  snprintf(clientId, sizeof clientId, "wifi-board-%s", kName);
  Serial.printf("connecting to %s:%u as %s\n", kRalphHost, kRalphPort, kMqttUser);
  if (!mqtt.connect(clientId, kMqttUser, kMqttPassword, topicStatus, 1, true, "offline")) {
    // 4 or 5: wrong user or password (see ralph passwd); -2: no TCP
    // connection (address, port, listen setting, firewall).
    Serial.printf("MQTT connect failed, state %d\n", mqtt.state());
    return false;
  }
  mqtt.publish(topicStatus, "online", true);
  // Subscribed again on every connection: PubSubClient asks for a clean
  // session, so the broker forgets subscriptions when the board goes.
  mqtt.subscribe(topicLed, 1);
  Serial.println("MQTT connected");
  return true;
}

void setup() {
  Serial.begin(115200);
  pinMode(LED_BUILTIN, OUTPUT);
  snprintf(topicTemp, sizeof topicTemp, "devices/%s/temp", kName);
  snprintf(topicLed, sizeof topicLed, "devices/%s/cmd/led", kName);
  snprintf(topicStatus, sizeof topicStatus, "devices/%s/status", kName);

  WiFi.mode(WIFI_STA);
  WiFi.setAutoReconnect(true);  // the Wi-Fi stack retries by itself
  WiFi.begin(kWifiSsid, kWifiPassword);

  mqtt.setServer(kRalphHost, kRalphPort);
  mqtt.setCallback(onMessage);
}

void loop() {
  uint32_t now = millis();
  if (WiFi.status() != WL_CONNECTED) {
    backoffMs = 0;  // the broker is not to blame: try as soon as Wi-Fi is back
    return;
  }
  if (!mqtt.connected()) {
    // Back off exponentially, so that a gateway that is down or refusing
    // us is not hammered, and without blocking the loop.
    if (now - lastAttempt < backoffMs) return;
    lastAttempt = now;
    if (!connect()) {
      backoffMs = backoffMs == 0 ? kMinBackoffMs : backoffMs * 2;
      if (backoffMs > kMaxBackoffMs) backoffMs = kMaxBackoffMs;
      Serial.printf("next attempt in %u s\n", (unsigned)(backoffMs / 1000));
      return;
    }
    backoffMs = 0;
  }
  mqtt.loop();

  if (now - lastPublish >= kPublishEveryMs) {
    lastPublish = now;
    char value[16];
    snprintf(value, sizeof value, "%.1f", temperatureRead());
    if (mqtt.publish(topicTemp, value)) {
      Serial.printf("%s %s\n", topicTemp, value);
    }
  }
}
