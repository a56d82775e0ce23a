// The browser tests' fake Gemini as a process of its own, for the emulator deploy
// (scripts/emulator.sh): `node fake-gemini-server.mjs PORT` serves it on 127.0.0.1:PORT.
import { startFakeGemini } from "./fake-gemini.mjs";

const fake = await startFakeGemini(Number(process.argv[2]));
console.log(`fake Gemini on ${fake.url}`);
