// The game's sound: played through the same <video> element as the picture,
// unmuted once the player has pressed Play (the press is the gesture browsers
// require before a page may make a sound), with a mute button whose choice is
// remembered in localStorage for the next visit.

const MUTED_KEY = "playcast.muted";

function storedMuted() {
  try {
    return window.localStorage.getItem(MUTED_KEY) === "1";
  } catch {
    return false; // storage blocked (private mode, policy): sound on by default
  }
}

function storeMuted(muted) {
  try {
    window.localStorage.setItem(MUTED_KEY, muted ? "1" : "0");
  } catch {
    /* not remembered, still applied */
  }
}

export class Sound {
  /**
   * @param {HTMLVideoElement} video the element that plays the stream
   * @param {HTMLButtonElement} button the mute toggle (aria-pressed = muted)
   */
  constructor(video, button) {
    this.video = video;
    this.button = button;
    this.muted = storedMuted();
    this.allowed = false; // the player has pressed Play on this page
    this.hasAudio = false;
    button.addEventListener("click", () => this.setMuted(!this.muted));
    this.#apply();
  }

  /** Call from the Play click handler itself: the gesture that allows sound. */
  unlock() {
    this.allowed = true;
    this.#apply();
  }

  /** The session's stream now has (or has no) audio track. */
  setHasAudio(hasAudio) {
    this.hasAudio = hasAudio;
    document.body.dataset.sound = hasAudio ? (this.muted ? "muted" : "on") : "none";
    this.#apply();
  }

  setMuted(muted) {
    this.muted = muted;
    storeMuted(muted);
    this.#apply();
    // Unmuting is itself a gesture: make sure playback runs with sound.
    if (!muted && this.video.srcObject) this.video.play().catch(() => {});
  }

  /** Start playback; if the browser refuses sound, play muted rather than not at all. */
  play() {
    this.video.play().catch((err) => {
      if (err.name === "NotAllowedError" && !this.video.muted) {
        console.warn("sound not allowed yet: playing muted");
        this.video.muted = true;
        this.#showButton(true);
        this.video.play().catch(() => {});
      } else if (err.name !== "AbortError") {
        console.warn("video.play:", err); // AbortError: the session ended meanwhile
      }
    });
  }

  #apply() {
    const silent = this.muted || !this.allowed;
    this.video.muted = silent;
    if (this.hasAudio) document.body.dataset.sound = this.muted ? "muted" : "on";
    this.#showButton(silent);
  }

  #showButton(silent) {
    this.button.setAttribute("aria-pressed", String(silent));
    this.button.title = silent ? "Sound off (click for sound)" : "Sound on (click to mute)";
  }
}
