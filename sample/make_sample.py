"""Regenerate the synthetic part of the embedded sample set (deterministic): python sample/make_sample.py"""

from pathlib import Path

from curate import synthetic as syn

HERE = Path(__file__).parent / "videos"

if __name__ == "__main__":
    for i in range(3):
        syn.write_video(HERE / f"bouncing{i:03d}_000000.mp4", syn.bouncing_video(8.0, size=(144, 256), fps=15.0, seed=i, period=0.4 + 0.15 * i)[0])
    syn.write_video(HERE / "cutshots000_000000.mp4", syn.cut_video(9.0, cut_at=4.5, size=(144, 256), fps=15.0, seed=7))
    syn.write_video(HERE / "stillimage0_000000.mp4", syn.static_video(5.0, size=(144, 256), fps=15.0, seed=8))
    syn.write_video(HERE / "silentball0_000000.mp4", syn.bouncing_video(5.0, size=(144, 256), fps=15.0, seed=9, silent=True)[0])
