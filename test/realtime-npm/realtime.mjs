// One OpenAI Realtime session through the gateway with the official openai npm
// package's WebSocket client (OpenAIRealtimeWS, on the ws package). BASE_URL is the
// gateway's model route; the API key is the agent's own, which the gateway strips.
import OpenAI from 'openai';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';

const client = new OpenAI({ apiKey: process.env.AGENT_KEY, baseURL: process.env.BASE_URL });
const rt = new OpenAIRealtimeWS({ model: process.env.MODEL }, client);
const timer = setTimeout(() => { console.error('timed out'); process.exit(2); }, 10000);
let audio = 0;
rt.socket.on('open', () => {
  rt.send({ type: 'input_audio_buffer.append', audio: Buffer.alloc(640).toString('base64') });
  rt.send({ type: 'response.create' });
});
rt.on('response.output_audio.delta', (ev) => { audio += Buffer.from(ev.delta, 'base64').length; });
rt.on('response.done', (ev) => {
  console.log(JSON.stringify({ audio, usage: ev.response.usage }));
  clearTimeout(timer);
  rt.close();
});
rt.on('error', (err) => { console.error('realtime error:', err.message); process.exit(1); });
