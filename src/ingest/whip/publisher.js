// Earshot WHIP publisher (RFC 9725): push a call's audio from a browser softphone.
//
//   import { publish } from "https://earshot.example.com/whip/publisher.js";
//   const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
//   const session = await publish({
//     url: "https://earshot.example.com/whip?call=CALL-123&party=rep&campaign=spring",
//     token: PUBLISHER_TOKEN,            // minted by your backend: earshot token issue --role publisher --call CALL-123
//     tracks: mic.getAudioTracks(),      // or [micTrack, remotePartyTrack] with party=both
//   });
//   // ... when the call ends:
//   await session.stop();
//
// One session per party (rep, customer) with the same `call` joins one call; a session
// with two tracks (party=both) carries rep then customer.
export async function publish({ url, token, tracks }) {
  const pc = new RTCPeerConnection();
  for (const track of tracks) pc.addTransceiver(track, { direction: "sendonly" });
  await pc.setLocalDescription(await pc.createOffer());
  // Earshot does not take trickle ICE: send the offer with every candidate.
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && resolve());
    setTimeout(resolve, 2000);
  });
  const res = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", Authorization: `Bearer ${token}` },
    body: pc.localDescription.sdp,
  });
  if (res.status !== 201) {
    pc.close();
    throw new Error(`WHIP ${res.status}: ${await res.text()}`);
  }
  // Relative to where the POST ended up (a redirect to another node is followed).
  const location = new URL(res.headers.get("Location"), res.url).toString();
  await pc.setRemoteDescription({ type: "answer", sdp: await res.text() });
  return {
    pc,
    location,
    async stop() {
      pc.close();
      await fetch(location, { method: "DELETE", headers: { Authorization: `Bearer ${token}` } });
    },
  };
}
