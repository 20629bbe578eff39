"""The media layer every package imports: decoding and encoding audio-video files (`decode`, `encode`),
local or object storage (`storage`), the WebDataset shard format (`shards`) and streaming shards to
training readers (`stream`). It imports no other package of the project."""
