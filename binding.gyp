{
  "targets": [
    {
      "target_name": "postwarden",
      "sources": ["native/addon.cc", "native/sockets.cc", "native/listener.cc",
                  "native/handoffs.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-Wall", "-Wextra"],
      "cflags_cc!": ["-fno-exceptions"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"]
    }
  ]
}
