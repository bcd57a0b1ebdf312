# Turn the docs page's files into one C header: a byte array per file and a
# table of {name, content type, bytes, length, ETag}, the ETag being a prefix
# of the file's SHA-256 so a browser revalidates cheaply and never keeps a
# stale copy across builds.
#   cmake -DDIR=dir -DFILES=a.html,b.js -DOUT=header -P embed_web.cmake
string(REPLACE "," ";" FILES "${FILES}")
set(arrays "")
set(table "")
set(i 0)
foreach(name ${FILES})
  set(path "${DIR}/${name}")
  file(READ "${path}" hex HEX)
  string(LENGTH "${hex}" hexlen)
  math(EXPR nbytes "${hexlen} / 2")
  string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
  string(REGEX REPLACE "(0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,0x..,)" "\\1\n    " body "${body}")
  file(SHA256 "${path}" sum)
  string(SUBSTRING "${sum}" 0 20 etag)
  if(name MATCHES "\\.html$")
    set(type "text/html; charset=utf-8")
  elseif(name MATCHES "\\.css$")
    set(type "text/css; charset=utf-8")
  elseif(name MATCHES "\\.js$")
    set(type "text/javascript; charset=utf-8")
  elseif(name MATCHES "\\.svg$")
    set(type "image/svg+xml")
  else()
    message(FATAL_ERROR "embed_web.cmake: no content type for ${name}")
  endif()
  string(APPEND arrays "static const unsigned char pbx_web_file_${i}[] = {\n    ${body}0x00\n};\n")
  string(APPEND table "    {\"${name}\", \"${type}\", pbx_web_file_${i}, ${nbytes}, \"\\\"${etag}\\\"\"},\n")
  math(EXPR i "${i} + 1")
endforeach()
file(WRITE "${OUT}.tmp" "/* Generated from ${DIR} by cmake/embed_web.cmake: do not edit. */\n"
  "${arrays}"
  "static const struct pbx_web_asset pbx_web_assets[] = {\n${table}    {NULL, NULL, NULL, 0, NULL},\n};\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
file(REMOVE "${OUT}.tmp")
